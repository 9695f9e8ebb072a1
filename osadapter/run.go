// Package osadapter is the thin shell around the core: it turns real
// signals, wait4 results, timers and transport events into fsm events, and
// carries out the actions the core returns (spawn, kill, exec, exit, log).
// Run builds the transports from its Config and environment: the
// listeners (--listen, socket activation), a notify socket per worker
// (--ready notify, --watchdog), the control socket (--control) and the master's own
// sd_notify (NOTIFY_SOCKET); each keeps what it must across a re-exec.
// Every descriptor the master holds for its whole life has one owner
// that the loop references until the master exits, never only an fd
// number whose *os.File the collector could finalize: the listeners are
// owned by the loop's fd registry (fds.go), which also checks them before
// each spawn and re-exec; the control and notify sockets by their
// transports.
//
// The caller has a few duties:
//
//  1. Import the package from package main. Its first variable initializer
//     subscribes to every signal of fsm.CatchableSignals and pins the main
//     goroutine to the thread the process started on; it also turns the
//     process into a worker trampoline when the master asked for one.
//  2. Call Run from the main goroutine (main.main, or TestMain), and exit
//     with what it returns. Run forks every worker and re-executes the
//     master from that one thread: a worker's parent-death signal fires
//     when the thread that forked it ends.
//  3. Start nothing with os/exec and call no Process.Wait in the master:
//     Run reaps every child with wait4(-1) and would steal their status.
package osadapter

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/listen"
	"github.com/mworker/mworker/internal/sdnotify"
)

// Run supervises the workers until the core decides to exit, and returns
// the master's exit status. A failure to start (bad config, unwritable pid
// file) is one line on cfg.Stderr, "mworker: " and the reason, and status 1.
func Run(cfg Config) int {
	ls, err := takeListeners(cfg.Listen, cfg.ListenNonblocking)
	if err != nil {
		fmt.Fprintf(stderrOf(cfg), "mworker: %v\n", err)
		return 1
	}
	ms, err := openMetrics(cfg.Metrics)
	if err != nil {
		listen.Close(ls)
		fmt.Fprintf(stderrOf(cfg), "mworker: %v\n", err)
		return 1
	}
	cfg.listeners = len(ls)
	return run(cfg, realOS(), subscribed(), ls, ms)
}

func stderrOf(cfg Config) io.Writer {
	if cfg.Stderr == nil {
		return os.Stderr
	}
	return cfg.Stderr
}

func run(cfg Config, sys *OS, sigs <-chan os.Signal, ls []listen.Listener, ms *metricsServer) int {
	stderr := stderrOf(cfg)
	l, err := newLoop(cfg, sys, sigs, stderr)
	if err != nil {
		listen.Close(ls)
		if ms != nil {
			ms.close()
		}
		fmt.Fprintf(stderr, "mworker: %v\n", err)
		return 1
	}
	l.useMetrics(ms)
	if err := l.useListeners(ls); err != nil {
		l.closeTransports()
		fmt.Fprintf(stderr, "mworker: %v\n", err)
		return 1
	}
	if l.ctl != nil {
		go l.ctl.serve(l.log)
	}
	l.leaveDir()
	status := l.run()
	if l.exited {
		l.finishLingering()
		l.closeTransports()
		// The workers are gone: what they wrote last is read and queued
		// (bounded: a worker's orphan may hold its output open).
		l.wout.drain(exitWait.stall)
		l.stdout.wait(l.stdout.queuedBytes(), exitWait)
	}
	if l.pidFile != "" && l.exited {
		if err := os.Remove(l.pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			l.logf(slog.LevelWarn, "cannot remove pid file", "path", l.pidFile, "err", err.Error())
		}
	}
	// The last lines say why the master exits: give the writer a moment,
	// bounded, as stderr may not be read at all.
	l.out.sync(exitWait)
	if l.exited && l.ctl != nil {
		l.ctl.reportExit(status, l.log)
	}
	return status
}

// closeTransports closes the listeners, the notify sockets and the
// control socket for good, and removes the notify sockets' directory, at
// the master's exit (never across a re-exec).
func (l *loop) closeTransports() {
	if err := l.fds.closeAll(); err != nil {
		l.logf(slog.LevelDebug, "close listeners", "err", err.Error())
	}
	if l.ready != nil {
		l.ready.exit()
	}
	if l.ctl != nil {
		l.ctl.close(l.log)
	}
	if l.met.srv != nil {
		l.met.srv.close()
	}
}

func errorf(format string, a ...any) error {
	return fmt.Errorf("osadapter: "+format, a...)
}

// newLoop prepares everything Run needs before the first event.
func newLoop(cfg Config, sys *OS, sigs <-chan os.Signal, stderr io.Writer) (_ *loop, err error) {
	out := newHeldWriter(stderr)
	logger, err := newLogger(cfg.LogFormat, cfg.LogLevel, out)
	if err != nil {
		return nil, err
	}
	out.q.report = func(lines, total int64) {
		logger.Warn(fmt.Sprintf("%d log lines dropped: stderr was not being read", lines), "dropped_log_lines", total)
	}
	if len(cfg.Command) == 0 {
		return nil, errorf("no worker command: give one after --")
	}
	if err := checkWorkerOutput(cfg.WorkerOutput); err != nil {
		return nil, err
	}
	var stdout io.Writer = os.Stdout
	if cfg.Stdout != nil {
		stdout = cfg.Stdout
	}
	if sys.Gettid() != sys.Getpid() {
		return nil, errorf("Run must be called from the main goroutine: it forks workers and re-executes from the thread the process started on")
	}
	env := sys.Environ()
	l := &loop{
		sys:       sys,
		log:       logger,
		out:       out,
		sigs:      sigs,
		events:    cfg.Events,
		notify:    cfg.Notifier,
		reply:     cfg.Replier,
		command:   cfg.Command,
		workerEnv: withoutVars(workerEnv(env), fdEnvNames(cfg.FdEnv)...),
		fdEnv:     cfg.FdEnv,
		timers:    make(map[fsm.Timer]int64),
		linger:    lingering{groups: make(map[int]int64), sent: make(map[int]int64)},
		spawned:   make(map[int]int64),
		pidFile:   cfg.PidFile,
		met:       &metrics{},

		cred: cfg.Credential,

		prepareExec: cfg.PrepareExec,
		check:       cfg.CheckTakeover,
	}
	l.stdout = newLogQueue(stdout, logQueueSize)
	l.wout = newWorkerOutput(cfg.WorkerOutput, l.stdout, out.q, logger)
	if l.reply == nil {
		l.reply = debugTransport{logger}
	}
	l.fds.fstat = sys.Fstat

	if v, ok := lookupEnv(env, envState); ok {
		st, err := decodeState(v)
		if err != nil {
			return nil, err
		}
		l.resumed = st
		l.path = st.Path
		l.mask.Val = st.Mask
		for _, s := range st.Ignored {
			l.ignored = append(l.ignored, syscall.Signal(s))
		}
		// The previous image blocked SIGUSR1/SIGUSR2 for the exec; now that
		// signal.Notify is in place, give this thread the mask of the first
		// start again, less what the runtime has unblocked (spawn gives the
		// whole of it to the workers).
		var cur unix.Sigset_t
		if err := sys.SigMask(unix.SIG_BLOCK, nil, &cur); err != nil {
			return nil, errorf("read the signal mask after re-exec: %w", err)
		}
		for i := range cur.Val {
			cur.Val[i] &= l.mask.Val[i]
		}
		if err := sys.SigMask(unix.SIG_SETMASK, &cur, nil); err != nil {
			return nil, errorf("restore the signal mask after re-exec: %w", err)
		}
		if v, ok := lookupEnv(env, envLogDropped); ok {
			total, unreported, err := parseLogDropped(v)
			if err != nil {
				return nil, err
			}
			out.q.resume(total, unreported)
		}
		if v, ok := lookupEnv(env, envWorkerOutput); ok {
			// The workers that survived the re-exec keep writing to
			// their pipes: read them here, whatever this image's mode.
			if err := l.wout.adopt(v); err != nil {
				l.logf(slog.LevelWarn, "cannot take over the workers' output pipes: their output is lost", "err", err.Error())
			}
		}
		if v, ok := lookupEnv(env, envExecPipe); ok {
			// What the previous image's handler caught after its last look
			// at the channel came later than what it carried.
			defer func() { l.carried = append(l.carried, takeExecPipe(v)...) }()
		}
		if v, ok := lookupEnv(env, envCarried); ok {
			execAt, sigs, err := parseCarried(v)
			if err != nil {
				return nil, err
			}
			l.carried = sigs
			if notifiedAt > 0 {
				l.logf(slog.LevelDebug, "re-exec window: execve to signal.Notify",
					"window_us", (notifiedAt-execAt)/1000, "early_us", (earlyAt()-execAt)/1000,
					"init_us", (initAt-execAt)/1000,
					"all_us", (allNotifiedAt-execAt)/1000)
			}
		}
	} else {
		if err := sys.SigMask(unix.SIG_BLOCK, nil, &l.mask); err != nil {
			return nil, errorf("read the signal mask: %w", err)
		}
		l.ignored = slices.Clone(startIgnored)
		// What the runtime changed before this package could look.
		if sys.StartSignals != nil {
			mask, ignored, err := sys.StartSignals()
			if err != nil {
				l.logf(slog.LevelDebug, "cannot read the signal mask and dispositions mworker was started with: workers inherit only those the Go runtime left alone", "err", err.Error())
			}
			l.mask.Val[0] |= mask
			for _, s := range ignored {
				if !slices.Contains(l.ignored, s) {
					l.ignored = append(l.ignored, s)
				}
			}
			slices.Sort(l.ignored)
		}
	}
	l.resumeStatus(l.resumed)
	l.version = cfg.Version
	if l.version == "" {
		l.version = buildVersion()
	}
	if rawSigErr != nil {
		l.logf(slog.LevelWarn, "SIGPROF, 32 and 34 cannot be caught: the first is dropped, the others end the master", "err", rawSigErr.Error())
	}

	mc := cfg.Machine
	if l.resumed != nil {
		if t := l.resumed.Terminal; t != nil {
			l.term = terminal{on: true, fg: t.Fg, slot: t.Slot}
		}
	} else {
		on, why, err := resolveTerminal(sys, cfg.Terminal, mc.Workers, cfg.listeners, cfg.WorkerOutput)
		if err != nil {
			return nil, err
		}
		if why != "" {
			l.logf(slog.LevelDebug, "no terminal mode: "+why)
		}
		l.term.on = on
	}
	if l.term.on && !cfg.RestartGiven {
		mc.Restart = fsm.RestartNo
	}
	if l.term.on && l.resumed == nil {
		l.logf(slog.LevelInfo, "terminal mode: the worker runs in the terminal's foreground; it is not restarted unless --restart says so (--tty off for a server)",
			"restart", mc.Restart.String())
	}
	if mc.Path == "" {
		mc.Path = l.path
	}
	if mc.Path == "" {
		if len(os.Args) == 0 || os.Args[0] == "" {
			return nil, errorf("cannot tell where mworker was started from (empty argv[0]): set Config.Machine.Path")
		}
		p, err := startPath(os.Args[0], env)
		if err != nil {
			return nil, err
		}
		mc.Path = p
	}
	l.path = mc.Path
	l.reexec = mc.Reexec
	l.stopSignal, l.stopTimeout = mc.StopSignal, mc.StopTimeout
	if l.resumed != nil {
		maps.Copy(l.linger.groups, l.resumed.Lingering)
	}
	if mc.Argv == nil {
		mc.Argv = os.Args
	}
	if mc.Resume == nil && l.resumed != nil {
		h := l.resumed.Handover
		mc.Resume = &h
	}
	if mc.Seed == 0 {
		mc.Seed = jitterSeed()
	}
	// The master's own service manager, when it gave one.
	if addr, ok := lookupEnv(env, sdnotify.EnvNotifySocket); l.notify == nil && ok && addr != "" {
		sm := &serviceManager{addr: addr, pid: sys.Getpid(), now: sys.Now, log: logger}
		if l.resumed != nil {
			sm.announced = l.resumed.Handover.Announced
			sm.dropped = l.resumed.NotifyDropped
		}
		l.notify = sm
	}
	if l.notify == nil {
		l.notify = debugTransport{logger}
	}
	// Its watchdog (WatchdogSec=), fed from the event loop.
	var warning string
	if l.watchdog, warning = newMasterWatchdog(env, sys.Getpid()); warning != "" {
		l.logf(slog.LevelWarn, warning)
	}
	if l.resumed != nil {
		for _, w := range l.resumed.Handover.Workers {
			if at, ok := l.resumed.Spawned[w.Pid]; ok {
				l.spawned[w.Pid] = at
			}
		}
	}
	if l.ready, err = newReadySockets(mc.Ready.Kind == fsm.ReadyNotify || mc.Watchdog > 0, logger, env); err != nil {
		return nil, err
	}
	l.ready.notify, l.ready.watchdog = mc.Ready.Kind == fsm.ReadyNotify, mc.Watchdog > 0
	if cfg.Credential != nil {
		if err := l.ready.share(cfg.Credential); err != nil {
			return nil, err
		}
	}
	l.ready.texts = l.st.StatusText
	// With --watchdog, each worker gets its own, as systemd gives a
	// service's main process (WatchdogSec=): WATCHDOG_USEC here, and
	// WATCHDOG_PID, its own pid, from the trampoline (spawn.go).
	if mc.Watchdog > 0 {
		l.workerEnv = append(l.workerEnv, envWatchdogUsec+"="+strconv.FormatInt(mc.Watchdog.Microseconds(), 10))
		l.watchdogPid = true
	}
	// The master exits if it cannot start: leave no directory behind.
	defer func() {
		if err != nil {
			l.ready.exit()
		}
	}()
	// Whatever this image's --ready, take over the sockets the previous
	// image handed over, so that none leaks.
	if v, ok := lookupEnv(env, envReadySockets); ok {
		l.ready.adopt(v)
	}
	if l.m, err = fsm.New(mc); err != nil {
		return nil, errorf("%w", err)
	}
	l.met = newMetrics(l.resumed, time.Now())
	if l.resumed != nil {
		// The machine reports them once Start has resumed it.
		l.met.lastOK, l.met.lastFailed = l.resumed.Handover.Reloads, l.resumed.Handover.FailedReloads
	}

	l.useDir(l.resumed, &cfg.Control, &l.pidFile)
	l.requests = make(chan control.Request)
	if cfg.Control != "" {
		if l.ctl, err = openControl(cfg.Control, logger); err != nil {
			return nil, err
		}
		l.requests = l.ctl.in
	}

	if l.pidFile != "" {
		if err := writePidFile(l.pidFile, sys.Getpid()); err != nil {
			l.closeTransports()
			return nil, err
		}
	}
	if sys.Getpid() != 1 {
		if err := sys.Subreaper(); err != nil {
			l.logf(slog.LevelWarn, "cannot become a subreaper: orphans of workers will not be reaped by mworker", "err", err.Error())
		}
	}
	return l, nil
}

func newLogger(format string, level slog.Level, w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, errorf("unknown log format %q: use text or json", format)
}

func lookupEnv(env []string, name string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// startPath resolves argv[0] to the absolute path the master re-executes
// on reload: a path with a slash is made absolute, a bare name is searched
// in PATH as a shell would. /proc/self/exe is not used: a new binary
// installed at the same path must take over on reload.
func startPath(argv0 string, env []string) (string, error) {
	if strings.Contains(argv0, "/") {
		p, err := filepath.Abs(argv0)
		if err != nil {
			return "", errorf("resolve start path %q: %w", argv0, err)
		}
		return p, nil
	}
	pathEnv, _ := lookupEnv(env, "PATH")
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, argv0)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			abs, err := filepath.Abs(p)
			if err != nil {
				return "", errorf("resolve start path %q: %w", p, err)
			}
			return abs, nil
		}
	}
	return "", errorf("cannot find %q in PATH, so a reload could not re-execute it: start mworker by an absolute path", argv0)
}

// writePidFile writes pid atomically: a reader sees the old file or the
// whole new one.
func writePidFile(path string, pid int) error {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--pidfile %s is a directory: give a file path in it, such as %s", path, filepath.Join(path, "mworker.pid"))
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return pidFileError(path, filepath.Clean(dir), err)
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return pidFileError(path, filepath.Clean(dir), err)
	}
	return nil
}

// pidFileError is the one line a --pidfile that cannot be written gets:
// the path and what to do, not the temporary file's name.
func pidFileError(path, dir string, err error) error {
	var reason string
	switch {
	case errors.Is(err, fs.ErrNotExist):
		reason = "the directory " + dir + " does not exist: create it or choose another path"
	case errors.Is(err, syscall.ENOTDIR):
		reason = notDirectory(dir) + " is not a directory: choose another path"
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		reason = "cannot create a file in " + dir + " (" + errnoText(err) + "): run as a user who may, or choose another path"
	default:
		reason = errnoText(err) + ": check that " + dir + " exists and is writable"
	}
	return fmt.Errorf("cannot write --pidfile %s: %s", path, reason)
}

// notDirectory finds, from dir up, the first component that exists and
// is not a directory.
func notDirectory(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
			return d
		}
		if p := filepath.Dir(d); p == d {
			return dir
		}
	}
}

// errnoText is the system's words for err, without the operation and the
// file name os.PathError and os.LinkError add.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// jitterSeed seeds the core's restart jitter (fsm.Config.Seed): each image
// draws its own, so that two masters, or two images of one, whose workers
// fail together do not restart them in lockstep either. Without
// crypto/rand, the pid and the clock; never 0, which means no jitter.
func jitterSeed() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err == nil {
		if s := binary.LittleEndian.Uint64(b[:]); s != 0 {
			return s
		}
	}
	return uint64(os.Getpid())<<32 ^ uint64(time.Now().UnixNano()) | 1
}
