package osadapter

import (
	"errors"
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

// exec replaces the master's image (fsm.Exec). What must survive goes into
// the environment: the core's handover, the timers' absolute deadlines, the
// signals the runtime has already delivered to the channel (drained last,
// just before execve), the fds to keep. On the way:
//
//   - SIGUSR1 and SIGUSR2 are blocked on this thread, so that one arriving
//     from now on stays pending across execve and reaches the new image
//     after its signal.Notify (the Go runtime would drop it before that);
//   - SIGHUP is set to SIG_IGN just before execve: the new runtime keeps an
//     inherited SIG_IGN for SIGHUP, where a pending or arriving SIGHUP
//     would otherwise kill it before init runs.
//
// If execve fails, all of that is undone and the failure is fed back as
// fsm.ExecFailed, followed by the signals read meanwhile.
func (l *loop) exec(a fsm.Exec) {
	l.noteReloads() // the reload this exec is for began in this step
	st := &execState{
		Path:     l.path,
		Handover: a.Handover,
		Mask:     l.mask.Val,
		Dir:      l.dir,
	}
	for _, s := range l.ignored {
		st.Ignored = append(st.Ignored, int(s))
	}
	// A reload that re-executes at once has not been published yet: its
	// start is now.
	l.publish()
	st.Metrics = l.met.metricsState
	if sm, ok := l.notify.(*serviceManager); ok {
		st.NotifyDropped = sm.dropped
	}
	st.Status = l.handStatus(a.Handover.Workers)
	st.Lingering = l.linger.groups
	if l.term.on {
		st.Terminal = &terminalState{Fg: l.term.fg, Slot: l.term.slot}
	}
	st.Spawned = make(map[int]int64, len(a.Handover.Workers))
	for _, w := range a.Handover.Workers {
		if at, ok := l.spawned[w.Pid]; ok {
			st.Spawned[w.Pid] = at
		}
	}
	now := l.sys.Now()
	for _, t := range a.Handover.Timers {
		at, ok := l.timers[t]
		if !ok {
			at = now
		}
		st.Deadlines = append(st.Deadlines, at)
	}

	var old unix.Sigset_t
	block := sigset(syscall.SIGUSR1, syscall.SIGUSR2)
	if err := l.sys.SigMask(unix.SIG_BLOCK, &block, &old); err != nil {
		l.step(fsm.ExecFailed{Err: "block SIGUSR1/SIGUSR2: " + err.Error()})
		return
	}
	var drained []syscall.Signal
	failed := func(err error) {
		l.leaveDir()
		l.sys.SigMask(unix.SIG_SETMASK, &old, nil)
		l.step(fsm.ExecFailed{Err: err.Error()})
		for _, s := range drained {
			l.onSignal(s)
		}
		l.requeue()
	}

	extra := append([]string(nil), l.execEnv...)
	readyEnv, readyUndo, err := l.ready.prepareExec()
	if err != nil {
		failed(err)
		return
	}
	extra = append(extra, readyEnv...)
	undo := readyUndo
	if l.prepareExec != nil {
		env, u, err := l.prepareExec(a.Handover)
		if err != nil {
			undo()
			failed(errorf("prepare the re-exec: %w", err))
			return
		}
		extra = append(extra, env...)
		if u != nil {
			undoTransports := undo
			undo = func() { u(); undoTransports() }
		}
	}
	failedAfterPrepare := func(err error) {
		undo()
		failed(err)
	}

	enc, err := st.encode()
	if err != nil {
		failedAfterPrepare(err)
		return
	}
	names := []string{envState, envCarried, envLogDropped, envExecPipe, envWorkerOutput, envMetricsFd}
	for _, kv := range extra {
		name, _, _ := strings.Cut(kv, "=")
		names = append(names, name)
	}
	env := append(withoutVars(l.sys.Environ(), names...), extra...)
	env = append(env, envState+"="+enc)

	// The check and the next image start where the first image did, so
	// that they read the command line as it did (workdir.go).
	l.enterDir()
	// A binary that replaced the running one is asked whether it takes this
	// command line and this handover (check.go), before anything is handed
	// to it: the listeners and the control socket are still close-on-exec.
	if l.check && l.sys.CheckTakeover != nil {
		if l.sys.Running != nil && l.sys.Running(a.Path) {
			l.logf(slog.LevelDebug, "takeover check skipped: the start path is the running binary", "path", a.Path)
		} else if err := l.sys.CheckTakeover(a.Path, checkArgv(a.Argv), env); err != nil {
			failedAfterPrepare(err)
			return
		}
	}

	// The listeners are checked as before a spawn: the next image takes
	// each fd number it is told for the listener it was.
	cleared, bad, err := l.fds.keepOnExec(l.sys.SetCloexec)
	if err != nil {
		if errors.Is(err, errFdReplaced) {
			l.logf(slog.LevelError, "refusing to hand a listener that is no longer the socket it was to the next image",
				"listener", bad.name, "fd", bad.fd, "err", err.Error())
		}
		failedAfterPrepare(err)
		return
	}

	// The control socket comes last: it stops accepting, the requests of
	// the clients it accepted are drained and handed over with their
	// connections, and clients that connect later wait in the listen queue
	// for the next image. The reload requests the machine has not seen
	// join this reload's (prepareExec says why): the handover is encoded
	// again with them.
	if l.ctl != nil {
		cenv, coalesced, u, err := l.ctl.prepareExec(a.Handover.Requests, l.log)
		if err == nil && len(coalesced) > 0 {
			st.Handover.Requests = append(slices.Clone(st.Handover.Requests), coalesced...)
			if enc, err = st.encode(); err != nil {
				u()
			}
			env = append(withoutVars(env, envState), envState+"="+enc)
			l.logf(slog.LevelDebug, "control: reload requests read during the re-exec join it", "requests", len(coalesced))
		}
		if err != nil {
			l.restoreCloexec(cleared)
			failedAfterPrepare(err)
			return
		}
		env = append(withoutVars(env, control.EnvNames...), cenv...)
		undoRest := undo
		undo = func() { u(); undoRest() }
	}

	// The --metrics socket likewise: scrapes wait in its queue.
	if l.met.srv != nil {
		menv, u, err := l.met.srv.prepareExec()
		if err != nil {
			l.restoreCloexec(cleared)
			failedAfterPrepare(err)
			return
		}
		env = append(env, menv...)
		undoRest := undo
		undo = func() { u(); undoRest() }
	}

	// From here to execve as little as possible.
	// The next image would not have what is held or queued: the writer gets
	// a bounded moment, and what it could not write is counted as dropped.
	// The workers' output pipes are handed over (workerout.go): their
	// readers stop first, so that no line is read here and lost.
	handed := l.wout.stopReaders(execWait.stall)
	if pc, err := l.keepPipesOnExec(handed); err != nil {
		l.restoreCloexec(pc)
		l.wout.resumeReaders(handed)
		l.restoreCloexec(cleared)
		failedAfterPrepare(err)
		return
	}
	l.out.sync(execWait)
	l.stdout.wait(l.stdout.queuedBytes(), execWait)
	env = append(env, logDropped(l.out.q.handover()))
	if stdoutLost, _ := l.stdout.handover(); len(handed) > 0 || l.wout.piped() || l.wout.dropped.Load()+stdoutLost > 0 {
		env = append(env, l.wout.handover(handed, stdoutLost))
	}
	resumePipes := func() {
		l.restoreCloexec(pipeFds(handed))
		l.wout.resumeReaders(handed)
	}
	l.sys.Ignore(syscall.SIGHUP)
	// From here on, a stop or reload signal that a thread of this image
	// catches is written to a pipe the next image reads, not queued for a
	// goroutine that will never run again; what the runtime caught before
	// is read from the channel (settleSignals) and carried in the
	// environment. Then Exec blocks them in every thread, with no thread
	// starting until execve (holdexec.go): one arriving from then on stays
	// pending. A stop pending at that point abandons the exec (the next
	// image's runtime would die of it at start): it is acted on here. What
	// is left is the new image's own start: a SIGTERM, SIGINT or SIGQUIT
	// that arrives after execve and before its signal.Notify kills it
	// (docs/signals.md); SIGUSR1 and SIGUSR2 wait for it.
	var caught *execCatch
	if l.sys.CatchForExec != nil {
		c, err := l.sys.CatchForExec()
		if err != nil {
			l.logf(slog.LevelDebug, "cannot catch the stop signals for the re-exec: one in its last moment may be lost", "err", err.Error())
		} else {
			caught = c
			env = append(env, envExecPipe+"="+strconv.Itoa(c.r))
		}
	}
	uncatch := func() {
		if caught != nil {
			drained = append(drained, caught.undo()...)
			caught = nil
		}
	}
	held := sigset(execHeld...)
	drained = l.drainSignals()
	if caught != nil {
		drained = append(drained, l.settleSignals()...)
	}
	err = l.sys.Exec(a.Path, a.Argv, append(env, carried(drained, l.sys.Now())), &held)
	if err == nil {
		l.replace = true // a fake OS "replaced" the image
		return
	}
	// The runtime takes the signals back before they are unblocked, so a
	// pending stop reaches the loop's channel.
	uncatch()
	if l.sys.UnblockAll != nil {
		if uerr := l.sys.UnblockAll(&held); uerr != nil {
			l.logf(slog.LevelWarn, "cannot unblock the stop and reload signals in every thread after the re-exec did not happen", "err", uerr.Error())
		}
	}
	l.sys.Catch(syscall.SIGHUP)
	l.restoreCloexec(cleared)
	resumePipes()
	var stop *stopPendingError
	if errors.As(err, &stop) {
		l.logf(slog.LevelInfo, "re-exec abandoned: a stop signal arrived during it", "signal", fsm.Signal(stop.sig).String())
		failedAfterPrepare(errorf("re-exec abandoned: %s arrived during it", fsm.Signal(stop.sig)))
		return
	}
	l.logf(slog.LevelDebug, "execve failed", "path", a.Path, "err", err.Error())
	failedAfterPrepare(&os.PathError{Op: "execve", Path: a.Path, Err: err})
}

// settleSignals takes from the channel every signal the runtime caught
// before the signals were blocked: os/signal hands a caught signal to the
// channel from a goroutine of its own, a moment later, so the channel may
// not have it yet. The master sends itself execSentinel and reads until it
// arrives: os/signal delivers what the runtime caught in order of arrival,
// and of several caught at once the lower numbers first, so every stop or
// reload signal caught before the sentinel comes before it. A real
// SIGWINCH that coalesces with the sentinel is not forwarded.
func (l *loop) settleSignals() []syscall.Signal {
	if err := l.sys.Kill(l.sys.Getpid(), execSentinel); err != nil {
		return nil
	}
	var out []syscall.Signal
	deadline := time.NewTimer(settleWait)
	defer deadline.Stop()
	for {
		select {
		case s := <-l.sigs:
			if s == execSentinel {
				return out
			}
			out = append(out, s.(syscall.Signal))
		case <-deadline.C:
			l.logf(slog.LevelDebug, "re-exec: the sentinel signal did not arrive", "waited", settleWait.String())
			return out
		}
	}
}

// execSentinel is the signal settleSignals sends the master: caught,
// higher than every stop and reload signal, harmless if one is lost.
const execSentinel = syscall.SIGWINCH

// settleWait bounds settleSignals; the sentinel takes microseconds.
const settleWait = 100 * time.Millisecond

// execHeld are the signals every thread blocks from the last look at the
// channel to execve: the stop signals, whose pending instance abandons the
// exec, and the reload and soft-stop signals, which the next image
// receives.
var execHeld = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func (l *loop) restoreCloexec(fds []int) {
	for _, fd := range fds {
		if err := l.sys.SetCloexec(fd, true); err != nil {
			l.logf(slog.LevelWarn, "cannot restore close-on-exec", "fd", fd, "err", err.Error())
		}
	}
}

// drainSignals takes every signal already queued on the channel without
// waiting.
func (l *loop) drainSignals() []syscall.Signal {
	var out []syscall.Signal
	for {
		select {
		case s := <-l.sigs:
			out = append(out, s.(syscall.Signal))
		default:
			return out
		}
	}
}

// keepPipesOnExec clears the close-on-exec flag of the workers' output
// pipes handed to the next image; it returns those it cleared.
func (l *loop) keepPipesOnExec(pipes []*outPipe) ([]int, error) {
	var cleared []int
	for _, op := range pipes {
		if err := l.sys.SetCloexec(op.fd, false); err != nil {
			return cleared, errorf("keep worker %d's %s pipe (fd %d) open across exec: %w", op.pid, op.stream, op.fd, err)
		}
		cleared = append(cleared, op.fd)
	}
	return cleared, nil
}

func pipeFds(pipes []*outPipe) []int {
	fds := make([]int, len(pipes))
	for i, op := range pipes {
		fds[i] = op.fd
	}
	return fds
}
