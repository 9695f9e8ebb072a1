package osadapter

import (
	"log/slog"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// spawn starts one worker: its own process group, the master's stdin,
// stdout and stderr (or, with --worker-output prefix or json, pipes the
// master reads), its working directory, the worker environment, and the
// parent-death signal; with --ready notify, a notify socket of its own. It
// runs on the master's thread (see OS).
func (l *loop) spawn(gen, slot int) (int, error) {
	// A worker gets its listeners only if each fd still names the socket
	// it was registered with: never a closed fd, never whatever socket
	// reused its number (the control socket as fd 3).
	listeners, bad, err := l.fds.workerFds()
	if err != nil {
		l.logf(slog.LevelError, "refusing to pass a listener that is no longer the socket it was to a worker",
			"listener", bad.name, "fd", bad.fd, "generation", gen, "slot", slot, "err", err.Error())
		return 0, err
	}
	env := append(slices.Clip(l.workerEnv), EnvGeneration+"="+itoa(gen), EnvSlot+"="+itoa(slot))
	files := []uintptr{0, 1, 2}
	for _, fd := range listeners {
		files = append(files, uintptr(fd))
	}
	argv0, argv := l.command[0], l.command
	if len(listeners) > 0 || len(l.ignored) > 0 || l.watchdogPid {
		if len(listeners) > 0 {
			env = append(env, "LISTEN_FDS="+itoa(len(listeners)))
			env = append(env, "LISTEN_FDNAMES="+strings.Join(l.fds.names(), ":"))
			for _, e := range l.fdEnv {
				env = append(env, e.expand(len(listeners)))
			}
		}
		if l.sys.Shell != "" && shellCanIgnore(l.ignored) {
			argv0, argv = shellTrampoline(l.sys.Shell, l.command, l.ignored, len(listeners) > 0, l.watchdogPid)
		} else {
			env = append(env, envTrampoline+"="+trampolineSpec(argv0, l.ignored, l.mask.Val[0]))
			argv0 = l.sys.SelfExe
		}
	}
	// --worker-output prefix or json: fds 1 and 2 are pipes the master
	// reads (workerout.go).
	var pipes *workerPipes
	if l.wout.piped() {
		if pipes, err = l.wout.open(); err != nil {
			return 0, err
		}
		files[1], files[2] = uintptr(pipes.w[0]), uintptr(pipes.w[1])
	}
	var rs *readySocket
	if l.ready != nil && l.ready.enabled {
		if rs, err = l.ready.open(gen, slot); err != nil {
			if pipes != nil {
				pipes.closeAll()
			}
			return 0, err
		}
		env = append(env, "NOTIFY_SOCKET="+rs.s.Addr())
	}
	// The child of ForkExec starts with the mask of the thread that forks
	// it: the mask of mworker's start, of which the runtime unblocked part
	// in this thread, is given back to it for the fork only.
	var threadMask unix.Sigset_t
	forkMask := l.mask != unix.Sigset_t{}
	if forkMask {
		if err := l.sys.SigMask(unix.SIG_SETMASK, &l.mask, &threadMask); err != nil {
			forkMask = false
			l.logf(slog.LevelWarn, "cannot give a worker the signal mask mworker was started with", "err", err.Error())
		}
	}
	attr := &syscall.ProcAttr{
		Dir:   l.dir,
		Env:   env,
		Files: files,
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSignal, Credential: l.cred},
	}
	// Terminal mode: the child makes its new group the terminal's
	// foreground before execve (terminal.go).
	fg := l.foreground(slot)
	attr.Sys.Foreground = fg
	pid, err := l.sys.ForkExec(argv0, argv, attr)
	if err != nil && fg {
		// The terminal went away or changed hands since the check: the
		// worker starts in the background rather than not at all.
		l.logf(slog.LevelWarn, "cannot give the terminal to the worker: it starts in the background", "err", err.Error())
		attr.Sys.Foreground, fg = false, false
		pid, err = l.sys.ForkExec(argv0, argv, attr)
	}
	if err == nil && l.term.on && (fg || l.term.fg == 0 || slot == l.term.slot) {
		// The terminal's worker, whether it could have the terminal now
		// or not (the master in the background): fg hands it over.
		l.term.fg, l.term.slot = pid, slot
	}
	if forkMask {
		l.sys.SigMask(unix.SIG_SETMASK, &threadMask, nil)
	}
	if pipes != nil {
		l.wout.started(pipes, pid, gen, slot, err)
	}
	if rs != nil {
		if err != nil {
			rs.close(l.log)
		} else {
			l.ready.watch(rs, pid)
		}
	}
	return pid, err
}

// Variables of the master that a worker must not inherit: the service
// manager's (they are the master's, not the worker's: its watchdog
// included, which the master feeds; a worker gets a watchdog of its own
// only from --watchdog), and every
// "MWORKER_" variable: mworker's internal ones (re-exec state, trampoline,
// control and listener hand-offs) and those the adapter sets per worker.
var serviceManagerEnv = []string{"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", envWatchdogUsec, envWatchdogPid}

const internalEnvPrefix = "MWORKER_"

// workerEnv is env less the master's own variables.
func workerEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range withoutVars(env, serviceManagerEnv...) {
		if !strings.HasPrefix(kv, internalEnvPrefix) {
			out = append(out, kv)
		}
	}
	return out
}

func withoutVars(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}
