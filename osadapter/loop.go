package osadapter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
)

// deathSignal is what a worker receives when the master dies, even by
// SIGKILL: a request to stop, as any other stop, rather than an execution.
const deathSignal = syscall.SIGTERM

// loop owns the machine and performs its actions. Every method runs on the
// goroutine (and thread) that called Run.
type loop struct {
	sys    *OS
	m      *fsm.Machine
	log    *slog.Logger
	out    *heldWriter   // the logger's writer: held while an event is performed
	stdout *logQueue     // the workers' stdout lines, with --worker-output prefix or json
	wout   *workerOutput // --worker-output
	notify Notifier
	reply  Replier
	sigs   <-chan os.Signal
	events <-chan fsm.Event

	path        string           // absolute start path, handed to the next image
	command     []string         // the worker's argv
	workerEnv   []string         // the worker's environment, less generation and slot
	fdEnv       []FdEnv          // --fd-env: variables that name the listener fds
	watchdogPid bool             // --watchdog: workers start through the trampoline, which sets WATCHDOG_PID
	ignored     []syscall.Signal // SIG_IGN at the first start; workers get them back
	mask        unix.Sigset_t    // the thread's mask at the first start
	fds         fdRegistry       // the listeners: passed to workers as 3.., kept across re-execs
	execEnv     []string         // variables that describe them to the next image
	pidFile     string
	dir         string // the working directory workers start in; "" is the master's own (workdir.go)
	prepareExec func(fsm.Handover) ([]string, func(), error)
	check       bool // run the takeover check before each re-exec
	reexec      fsm.ReexecPolicy

	ready *readySockets  // the workers' notify sockets
	ctl   *controlSocket // --control, or nil
	// requests are ctl's requests; a channel nothing sends on without it.
	requests <-chan control.Request
	spawned  map[int]int64 // CLOCK_MONOTONIC start of each live worker, for uptimes
	// linger is what exited workers left in their process groups
	// (lingering.go); stopSignal and stopTimeout are the core's.
	linger      lingering
	stopSignal  fsm.Signal
	stopTimeout time.Duration

	timers  map[fsm.Timer]int64 // armed timers and their CLOCK_MONOTONIC deadlines
	resumed *execState          // the previous image's state, or nil
	carried []syscall.Signal    // signals the previous image had not acted on

	exited bool
	status int
	// term is the terminal mode (--tty, terminal.go).
	term terminal
	// cred is the workers' uid and gids (--user, --group), or nil.
	cred    *syscall.Credential
	replace bool // Exec returned nil: only a fake OS does that

	watchdog *masterWatchdog // the service manager's watchdog of the master, or nil

	version string      // of this image, for status
	st      statusState // what status says that needs the clock (status.go)
	met     *metrics    // counters for --metrics; its server, or nil (metrics.go)
	// health carries /healthz requests to the loop; nil without --metrics.
	health <-chan chan<- healthAnswer
	// fresh carries the metrics handlers' requests for a new snapshot.
	fresh <-chan chan<- struct{}
}

func (l *loop) done() bool { return l.exited || l.replace }

// step feeds ev to the machine and performs the actions it returns, all of
// them and in order; then it feeds the spawns' outcomes, in the order of
// the spawns, before any other event (fsm's duties 2 and 3). An exec's
// failure is fed from within the Exec action, the last of its list.
func (l *loop) step(ev fsm.Event) {
	if l.done() {
		return
	}
	l.out.hold()
	defer l.out.release()
	var outcomes []fsm.Event
	tf, restart := ev.(fsm.TimerFired)
	restart = restart && tf.Timer.Kind == fsm.TimerRestart
	for _, a := range l.m.Step(ev) {
		if _, spawn := a.(fsm.Spawn); spawn && restart {
			l.met.Restarts++
		}
		if o := l.perform(a); o != nil {
			outcomes = append(outcomes, o)
		}
		if l.done() {
			return
		}
	}
	l.noteReloads()
	for _, o := range outcomes {
		l.step(o)
	}
}

// perform carries out one action; for a Spawn it returns the outcome the
// machine must be told.
func (l *loop) perform(a fsm.Action) fsm.Event {
	switch a := a.(type) {
	case fsm.Spawn:
		pid, err := l.spawn(a.Generation, a.Slot)
		if err != nil {
			msg := err.Error()
			if l.cred != nil && errors.Is(err, syscall.EACCES) {
				// Resolved with the master's PATH and rights, run with the
				// workers': say so, the error alone does not.
				msg += " (workers run as uid " + strconv.Itoa(int(l.cred.Uid)) + " (--user): the command, and every directory on its path, must be executable by that user)"
			}
			return fsm.SpawnFailed{Generation: a.Generation, Slot: a.Slot, Status: fsm.ExitStatus{Code: spawnStatus(err)}, Err: msg}
		}
		l.spawned[pid] = l.sys.Now()
		return fsm.WorkerStarted{Generation: a.Generation, Slot: a.Slot, Pid: pid}
	case fsm.Kill:
		for _, pid := range a.Pids {
			l.killGroup(pid, syscall.Signal(a.Signal))
		}
	case fsm.SignalPids:
		for _, pid := range a.Pids {
			l.killPid(pid, syscall.Signal(a.Signal))
		}
	case fsm.Exec:
		l.exec(a)
	case fsm.Exit:
		l.exited, l.status = true, a.Status
	case fsm.SetTimer:
		l.timers[a.Timer] = l.sys.Now() + int64(a.After)
	case fsm.CancelTimer:
		delete(l.timers, a.Timer)
	case fsm.Suspend:
		l.suspend("the master got "+a.Signal.String(), "signal", a.Signal.String())
	case fsm.StopListening:
		if err := l.fds.closeListeners(); err != nil {
			l.logf(slog.LevelDebug, "close listeners at stop", "err", err.Error())
		}
		if n := len(l.fds.listeners); n > 0 {
			l.logf(slog.LevelDebug, "stopping: the master's copies of the listening sockets are closed; new connections are refused once the workers close theirs", "listeners", n)
		}
	case fsm.Notify:
		if err := l.notify.Notify(a); err != nil {
			l.logf(slog.LevelWarn, "cannot notify the service manager", "action", a.String(), "err", err.Error())
		}
	case fsm.Reply:
		// Whoever asked may read the log next: what led to the answer is
		// written before it, unless stderr is not being read (a bounded
		// wait: the answer is late by a few ms at most).
		l.out.sync(replyWait)
		// A scrape after the answer sees what was answered.
		l.publish()
		if l.ctl != nil {
			l.answer(a)
		} else if err := l.reply.Reply(a); err != nil {
			l.logf(slog.LevelWarn, "cannot answer a control request", "action", a.String(), "err", err.Error())
		}
	case fsm.Log:
		l.logf(slog.Level(a.Level), a.Msg, logAttrs(a.Attrs)...)
	default:
		l.logf(slog.LevelError, "osadapter: unknown action ignored", "action", a.String())
	}
	return nil
}

func (l *loop) logf(level slog.Level, msg string, attrs ...any) {
	l.log.Log(context.Background(), level, msg, attrs...)
}

// logAttrs turns the core's values into what a handler prints well: a
// Stringer (a status, a signal, a duration) as its string, also in JSON.
func logAttrs(kv []any) []any {
	out := make([]any, len(kv))
	for i, v := range kv {
		if s, ok := v.(fmt.Stringer); ok && i%2 == 1 {
			v = s.String()
		}
		out[i] = v
	}
	return out
}

// killGroup signals a worker's process group; a worker that left its group
// is signalled alone.
func (l *loop) killGroup(pid int, sig syscall.Signal) {
	if pid <= 0 {
		l.logf(slog.LevelError, "osadapter: refusing to signal a non-positive pid", "pid", pid, "signal", fsm.Signal(sig).String())
		return
	}
	l.noteGroupSignal(pid, sig)
	err := l.sys.Kill(-pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = l.sys.Kill(pid, sig)
	}
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		l.logf(slog.LevelWarn, "cannot signal worker", "pid", pid, "signal", fsm.Signal(sig).String(), "err", err.Error())
	}
}

func (l *loop) killPid(pid int, sig syscall.Signal) {
	if pid <= 0 {
		l.logf(slog.LevelError, "osadapter: refusing to signal a non-positive pid", "pid", pid, "signal", fsm.Signal(sig).String())
		return
	}
	if err := l.sys.Kill(pid, sig); err != nil {
		l.logf(slog.LevelWarn, "cannot signal process", "pid", pid, "signal", fsm.Signal(sig).String(), "err", err.Error())
	}
}

// onSignal acts on one signal read from the channel.
func (l *loop) onSignal(sig syscall.Signal) {
	if sig == syscall.SIGCHLD {
		l.reap()
		return
	}
	if fsm.RouteOf(fsm.Signal(sig)) == fsm.RouteReload {
		l.noteImage()
	}
	if sig == syscall.SIGCONT {
		l.continued()
	}
	l.step(fsm.SignalReceived{Signal: fsm.Signal(sig), HangUp: sig == syscall.SIGHUP && l.hungUp()})
}

// noteImage tells the machine, before a reload request, whether the binary
// at the start path is another image than the running one (an upgrade), so
// that under fsm.ReexecOnUpgrade only an upgrade re-executes. Two stats.
// A start path that cannot be read counts as unchanged: the reload then
// starts the new generation in place, where an exec could only fail.
func (l *loop) noteImage() {
	if l.reexec != fsm.ReexecOnUpgrade || l.sys.Running == nil {
		return
	}
	changed := false
	if _, err := os.Stat(l.path); err == nil {
		changed = !l.sys.Running(l.path)
	}
	if changed {
		l.logf(slog.LevelInfo, "the binary at the start path is not the running one: this reload re-executes it", "path", l.path)
	}
	l.step(fsm.ImageChanged{Changed: changed})
}

// reap collects every child that has exited. SIGCHLD coalesces, so one
// signal may stand for many exits: loop until wait4 has nothing more.
func (l *loop) reap() {
	opts := syscall.WNOHANG
	if l.term.on {
		opts |= syscall.WUNTRACED // the terminal's worker stopping stops the master
	}
	for !l.done() {
		var ws syscall.WaitStatus
		pid, err := l.sys.Wait4(-1, &ws, opts)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			l.step(fsm.NoChildren{})
			return
		case err != nil:
			l.logf(slog.LevelError, "osadapter: wait4 failed", "err", err.Error())
			return
		case pid <= 0:
			return
		}
		if ws.Stopped() {
			l.terminalWorkerStopped(pid, ws.StopSignal())
			continue
		}
		l.terminalWorkerExited(pid)
		l.ready.drop(pid)
		if at, worker := l.spawned[pid]; worker {
			l.met.noteExit(exitStatus(ws))
			l.workerGone(pid)
			if st := exitStatus(ws); l.cred != nil && st.Code == 126 && time.Duration(l.sys.Now()-at) < time.Second {
				// Through a trampoline (the worker inherits an ignored
				// signal) the exec fails in the child, not in ForkExec:
				// the same hint as for a spawn that fails with EACCES.
				l.logf(slog.LevelWarn, "worker could not execute its command: workers run as uid "+strconv.Itoa(int(l.cred.Uid))+
					" (--user): the command, and every directory on its path, must be executable by that user", "pid", pid)
			}
		}
		delete(l.spawned, pid)
		l.step(fsm.ChildExited{Pid: pid, Status: exitStatus(ws)})
	}
}

func exitStatus(ws syscall.WaitStatus) fsm.ExitStatus {
	if ws.Signaled() {
		return fsm.ExitStatus{Signal: fsm.Signal(ws.Signal())}
	}
	return fsm.ExitStatus{Code: ws.ExitStatus()}
}

// fireDue fires every timer whose deadline has passed, earliest first.
func (l *loop) fireDue() {
	now := l.sys.Now()
	type due struct {
		t  fsm.Timer
		at int64
	}
	var fire []due
	for t, at := range l.timers {
		if at <= now {
			fire = append(fire, due{t, at})
		}
	}
	slices.SortFunc(fire, func(a, b due) int {
		if a.at != b.at {
			return compare(a.at, b.at)
		}
		return strings.Compare(a.t.String(), b.t.String())
	})
	for _, d := range fire {
		// An earlier timer's step may have cancelled or re-armed this one.
		if at, ok := l.timers[d.t]; !ok || at != d.at {
			continue
		}
		delete(l.timers, d.t)
		l.step(fsm.TimerFired{Timer: d.t})
		if l.done() {
			return
		}
	}
}

func compare(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// nextDeadline is the earliest armed deadline.
func (l *loop) nextDeadline() (int64, bool) {
	var first int64
	ok := false
	for _, at := range l.timers {
		if !ok || at < first {
			first, ok = at, true
		}
	}
	return first, ok
}

// start feeds Start (after re-arming the timers a previous image handed
// over), the control requests and then the signals that image had read but
// not acted on, and sweeps the children that exited while no one was
// reaping. The requests come before the signals: a carried SIGUSR2 may
// re-execute this image at once, and they would wait for yet another
// image.
func (l *loop) start() {
	if st := l.resumed; st != nil {
		for i, t := range st.Handover.Timers {
			at := l.sys.Now()
			if i < len(st.Deadlines) {
				at = st.Deadlines[i]
			}
			l.timers[t] = at
		}
	}
	l.step(fsm.Start{})
	l.serveMetrics()
	l.requeue()
	for _, s := range l.carried {
		l.onSignal(s)
	}
	l.reap()
	l.publish()
}

// run is the event loop: one event at a time, from the signal channel, the
// timer and the transports, until the machine says Exit.
func (l *loop) run() int {
	l.start()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for !l.done() {
		// Between two events, whichever woke the loop: a loop that turns
		// pings, one stuck in an event does not.
		l.pingWatchdog()
		var wake <-chan time.Time
		at, ok := l.nextDeadline()
		if w := l.watchdog; w != nil && (!ok || w.next < at) {
			at, ok = w.next, true
		}
		if g, gok := l.lingerNext(); gok && (!ok || g < at) {
			at, ok = g, true
		}
		if ok {
			timer.Reset(time.Duration(max(0, at-l.sys.Now())))
			wake = timer.C
		}
		select {
		case s := <-l.sigs:
			l.onSignal(s.(syscall.Signal))
		case <-wake:
			l.lingerDue()
			l.fireDue()
		case sig := <-l.ready.out:
			for _, ev := range l.ready.events(sig) {
				l.step(ev)
			}
		case r := <-l.requests:
			l.onRequest(r)
		case c := <-l.health:
			l.answerHealth(c)
		case c := <-l.fresh:
			l.freshen(c)
		case ev, ok := <-l.events:
			if !ok {
				l.events = nil // a closed transport sends nothing more
				break
			}
			l.step(ev)
		}
		timer.Stop()
		l.publish()
	}
	return l.status
}

// spawnStatus is what a failed spawn counts as: 127 when the command does
// not exist, 126 when it cannot be executed, 1 otherwise.
func spawnStatus(err error) int {
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR):
		return 127
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM),
		errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.EISDIR):
		return 126
	}
	return 1
}

func itoa(n int) string { return strconv.Itoa(n) }
