package osadapter

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// Terminal mode (--tty): the worker in the terminal's foreground, so that
// an interactive program can read and write the terminal as it would
// under a shell or tini, and the master as a well-behaved shell job.
//
// Without it a worker is a background process group of the master's
// session: reading the terminal stops it (SIGTTIN), and an interactive
// shell under mworker never gets job control. In terminal mode the worker
// the master starts while it holds the terminal is made the foreground
// process group in the child, before execve (SysProcAttr.Foreground), so
// there is no moment at which it could read from the background; the
// terminal's Ctrl-C, Ctrl-\ and Ctrl-Z then reach it directly, as under
// tini. When that worker stops on a job-control signal (Ctrl-Z), the
// master stops itself, so the shell it was started from sees its job
// stopped and takes the terminal back; on SIGCONT from that shell (fg) it
// hands the terminal to the worker again before forwarding SIGCONT. When
// the worker exits while it holds the terminal, the master takes it back.
//
// In any mode, SIGTSTP, SIGTTIN or SIGTTOU sent to the master is forwarded
// to the workers and then, the core says (fsm.Suspend), stops the master
// itself; suspend carries it out as the kernel stops a process that leaves
// them at their default: not when its process group is orphaned (no shell
// can continue it: PID 1 of a container, a service).

// The values of Config.Terminal.
const (
	TerminalAuto = "auto"
	TerminalOn   = "on"
	TerminalOff  = "off"
)

// terminal is the loop's terminal mode.
type terminal struct {
	on bool
	// fg is the terminal's worker (its pid, which is its process group),
	// while it lives: the one given the terminal, or that would have been
	// had the master been in the foreground (it gets it on SIGCONT once the
	// master is); 0 when none. slot is its slot.
	fg, slot int
}

// errNoTerminal says why the master's stdin cannot be given to a worker.
type errNoTerminal struct{ why string }

func (e *errNoTerminal) Error() string { return e.why }

// CheckTerminal says whether the terminal mode can be turned on: stdin
// must be the master's controlling terminal. The command line runs it for
// --tty on before anything starts; the error is the one line it reports.
func CheckTerminal() error {
	return checkTerminal(realOS())
}

func checkTerminal(sys *OS) error {
	if sys.Tcgetpgrp == nil {
		return &errNoTerminal{"no terminal support on this system"}
	}
	_, err := sys.Tcgetpgrp()
	return err
}

// resolveTerminal decides the terminal mode at the first start: on with
// --tty on (checked by the command line); with auto when stdin is the
// controlling terminal, the master is in its foreground (a job the shell
// started in the foreground, or PID 1 of "docker run -it"), and the
// configuration is that of an interactive program: one worker, no
// listeners, the workers writing to the master's own stdout and stderr.
// It returns the mode and, when auto turned it off although stdin is a
// terminal, why (for a debug line).
func resolveTerminal(sys *OS, mode string, workers, listeners int, wout string) (bool, string, error) {
	switch mode {
	case "", TerminalOff:
		return false, "", nil
	case TerminalOn:
		if err := checkTerminal(sys); err != nil {
			return false, "", errorf("--tty on: %v: run mworker from a terminal, or use --tty auto", err)
		}
		return true, "", nil
	case TerminalAuto:
	default:
		return false, "", errorf("bad terminal mode %q: use auto, on or off", mode)
	}
	if checkTerminal(sys) != nil {
		return false, "", nil
	}
	switch {
	case workers != 1:
		return false, "stdin is a terminal, but " + strconv.Itoa(workers) + " workers cannot share its foreground (--tty on gives it to the newest)", nil
	case listeners > 0:
		return false, "stdin is a terminal, but the workers are servers (listeners): --tty on to give it to them", nil
	case wout != "" && wout != WorkerOutputInherit:
		return false, "stdin is a terminal, but --worker-output " + wout + " makes the workers' output pipes", nil
	}
	fg, err := sys.Tcgetpgrp()
	if err != nil || fg != sys.Getpgrp() {
		return false, "stdin is a terminal, but mworker is not in its foreground (a background job)", nil
	}
	return true, "", nil
}

// foreground says whether the worker about to start in slot should be
// given the terminal: only while the master holds it, or while the worker
// it gave it to does and the new one takes that one's slot (a reload's
// new generation, a restart SLOT); not a worker that scale adds beside
// it. A master started or put in the background never takes the terminal
// from its shell.
func (l *loop) foreground(slot int) bool {
	if !l.term.on {
		return false
	}
	fg, err := l.sys.Tcgetpgrp()
	if err != nil {
		return false
	}
	return fg == l.sys.Getpgrp() || (l.term.fg != 0 && fg == l.term.fg && slot == l.term.slot)
}

// terminalWorkerStopped is a worker that wait4 reported stopped (terminal mode
// only reports them). The worker that holds the terminal stopped by a
// job-control signal (Ctrl-Z, or reading or writing the terminal from the
// background) stops the master too, so that the shell sees its job stop.
func (l *loop) terminalWorkerStopped(pid int, sig syscall.Signal) {
	if pid != l.term.fg {
		return
	}
	switch sig {
	case syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU:
		if !l.suspend("the worker that holds the terminal stopped", "pid", pid, "signal", fsm.Signal(sig).String()) {
			// Nothing could continue the master, nor the worker: as the
			// kernel discards these signals in an orphaned group, the
			// worker continues at once (Ctrl-Z in "docker run -it").
			l.killGroup(pid, syscall.SIGCONT)
		}
	}
}

// terminalWorkerExited is told of every worker's exit: when it held the terminal,
// the master takes it back, so that the terminal's Ctrl-C reaches the
// master while it still runs (restarting the worker, or waiting for what
// the worker left behind). A worker that handed the terminal on (a shell
// to one of its jobs) is not overridden.
func (l *loop) terminalWorkerExited(pid int) {
	if !l.term.on || pid != l.term.fg {
		return
	}
	l.term.fg = 0
	if fg, err := l.sys.Tcgetpgrp(); err == nil && fg == pid {
		if err := l.sys.Tcsetpgrp(l.sys.Getpgrp()); err != nil {
			l.logf(slog.LevelWarn, "cannot take the terminal back from the worker that exited", "pid", pid, "err", err.Error())
		}
	}
}

// continued runs when SIGCONT reaches the master, before it is forwarded:
// when the shell put the master back in the foreground (fg), the worker
// that held the terminal gets it again before it continues.
func (l *loop) continued() {
	if !l.term.on || l.term.fg == 0 {
		return
	}
	if fg, err := l.sys.Tcgetpgrp(); err != nil || fg != l.sys.Getpgrp() {
		return // bg: the worker continues in the background
	}
	if err := l.sys.Tcsetpgrp(l.term.fg); err != nil {
		l.logf(slog.LevelWarn, "cannot give the terminal back to the worker", "pid", l.term.fg, "err", err.Error())
	}
}

// hungUp says, in terminal mode, whether the terminal is gone: then a
// SIGHUP is the kernel's (or the shell's) news of the hangup, not an
// operator's reload (fsm.SignalReceived.HangUp: the core ends the run as
// on SIGTERM; the worker got the hangup's SIGHUP from the kernel itself).
func (l *loop) hungUp() bool {
	if !l.term.on {
		return false
	}
	if _, err := l.sys.Tcgetpgrp(); err != nil {
		l.logf(slog.LevelInfo, "the terminal hung up", "err", err.Error())
		return true
	}
	return false
}

// suspend stops the master (fsm.Suspend, or the terminal's worker
// stopped), as the kernel stops a process on a job-control signal left at
// its default: unless its process group is orphaned, where nothing could
// continue it (the kernel discards those signals there).
// The master's timers, reaping and control socket wait until SIGCONT.
// It reports whether the master stopped (and has been continued since).
func (l *loop) suspend(why string, args ...any) bool {
	if l.sys.Orphaned == nil {
		return false
	}
	if orphaned, err := l.sys.Orphaned(); err != nil || orphaned {
		reason := "its process group is orphaned: no shell could continue it"
		if err != nil {
			reason = err.Error()
		}
		l.logf(slog.LevelDebug, "not stopping the master: "+reason, args...)
		return false
	}
	l.logf(slog.LevelDebug, why+": the master stops until SIGCONT", args...)
	// What led here (the signal forwarded, to whom) is written before the
	// master stops, not when it is continued; a stalled reader delays the
	// stop by a few ms at most.
	l.out.sync(replyWait)
	if err := l.sys.Kill(l.sys.Getpid(), syscall.SIGSTOP); err != nil {
		l.logf(slog.LevelWarn, "cannot stop the master", "err", err.Error())
		return false
	}
	return true
}

// tcgetpgrp is the foreground process group of the terminal on stdin; an
// *errNoTerminal when stdin is not the master's controlling terminal.
func tcgetpgrp() (int, error) {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err == nil {
		return pgrp, nil
	}
	if _, terr := unix.IoctlGetTermios(0, unix.TCGETS); terr != nil {
		return 0, &errNoTerminal{"stdin is not a terminal"}
	}
	// A terminal, but not the one of this session (started with setsid,
	// or by a service manager with a terminal as stdin).
	return 0, &errNoTerminal{"stdin is a terminal but not mworker's controlling terminal (" + err.Error() + ")"}
}

// tcsetpgrp makes pgrp the foreground process group of the terminal on
// stdin. The calling thread (the loop's, locked) blocks SIGTTOU for the
// call: from the background the kernel would otherwise send it to the
// master's group, whose handler would forward it to the workers and
// restart the call for ever.
func tcsetpgrp(pgrp int) error {
	defer blockTTOU()()
	return unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, pgrp)
}

// blockTTOU blocks SIGTTOU in the calling thread, which must be locked,
// and returns what restores the thread's mask. The kernel lets a blocked
// (or ignored) SIGTTOU through a background process's terminal write or
// tcsetpgrp instead of raising it.
func blockTTOU() (restore func()) {
	var ttou, old unix.Sigset_t
	ttou.Val[0] = 1 << (syscall.SIGTTOU - 1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &ttou, &old); err != nil {
		return func() {}
	}
	return func() { unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }
}

// orphaned says whether the master's process group is orphaned: no member
// has a parent in another process group of the same session, the
// condition under which the kernel discards SIGTSTP, SIGTTIN and SIGTTOU
// instead of stopping a process. It reads every process's /proc stat.
func orphaned() (bool, error) {
	self, err := procStat("self")
	if err != nil {
		return false, err
	}
	// The usual case, in two reads: the master's parent (a shell, a test)
	// is in the same session and another group.
	if parent, err := procStat(strconv.Itoa(self.ppid)); err == nil && parent.pgrp != self.pgrp && parent.session == self.session {
		return false, nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	var members []procStatus
	byPid := make(map[int]procStatus)
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := procStat(e.Name())
		if err != nil {
			continue // gone meanwhile
		}
		byPid[st.pid] = st
		if st.pgrp == self.pgrp {
			members = append(members, st)
		}
	}
	for _, m := range members {
		if p, ok := byPid[m.ppid]; ok && p.pgrp != self.pgrp && p.session == self.session {
			return false, nil
		}
	}
	return true, nil
}

type procStatus struct{ pid, ppid, pgrp, session int }

// procStat reads pid, ppid, pgrp and session from /proc/PID/stat.
func procStat(pid string) (procStatus, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return procStatus{}, err
	}
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procStatus{}, errors.New("unreadable /proc/" + pid + "/stat")
	}
	f := strings.Fields(s[end+1:]) // state ppid pgrp session ...
	if len(f) < 4 {
		return procStatus{}, errors.New("short /proc/" + pid + "/stat")
	}
	var st procStatus
	var errs [4]error
	st.pid, errs[0] = strconv.Atoi(strings.TrimSpace(s[:open]))
	st.ppid, errs[1] = strconv.Atoi(f[1])
	st.pgrp, errs[2] = strconv.Atoi(f[2])
	st.session, errs[3] = strconv.Atoi(f[3])
	if err := errors.Join(errs[:]...); err != nil {
		return procStatus{}, fmt.Errorf("/proc/%s/stat: %w", pid, err)
	}
	return st, nil
}
