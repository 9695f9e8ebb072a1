package osadapter

import (
	"errors"
	"log/slog"
	"syscall"
	"time"

	"github.com/mworker/mworker/fsm"
)

// What is left of a worker's process group when the worker has exited
// (issue 17): every worker is the leader of a process group of its own
// (spawn.go), and what it started and left behind (`sleep 1000 & exit 3`)
// is still in that group. When the master reaps a worker, the rest of the
// group gets the stop signal and, if it is still there --stop-timeout
// later, SIGKILL, as dumb-init does for its child's group.
//
// The group's id is the worker's pid, and once the worker is reaped that
// number can name another process and, through it, another group. The
// master never scans /proc for the group's members (a walk over every
// process of the machine, per exit); it relies on the kernel's rule that a
// pid number is not handed out again while any process still has it as its
// process group id (or session id, or pid). So:
//
//   - the group -P is signalled only when kill(P, 0) says no process has
//     pid P (ESRCH): while the old group has a member, P cannot have been
//     reused; if a process with pid P exists, the old group is gone (a new
//     worker, or anything else, got the number) and the master leaves it
//     alone; EPERM counts as "exists";
//   - kill(-P, sig) then reaches the group's members, or fails with ESRCH
//     when it has none: the group is forgotten.
//
// What is left is the microseconds between the two calls: for the wrong
// group to be hit, the old group would have to empty, the kernel wrap
// round every pid number to P, and the new process with pid P make itself
// a group leader, all in between.
//
// A group that the core already signalled (a stop: the stop signal to the
// whole group, the worker first) is not sent the stop signal a second
// time: only its SIGKILL is due, --stop-timeout after that stop signal.
// One that got SIGKILL needs nothing. Members that made a group of their
// own (setsid, setpgid: what daemons do) are not touched.
type lingering struct {
	// groups are the groups waiting for their SIGKILL, by pgid, with its
	// CLOCK_MONOTONIC deadline.
	groups map[int]int64
	// sent is when the stop signal (or SIGKILL, then -1) went to each live
	// worker's group, for the groups the core signalled.
	sent map[int]int64
	// killed are the groups that got their SIGKILL: their
	// deadline is then the end of killGrace, for their members to die and
	// be reaped.
	killed map[int]bool
}

// killGrace is how long the master waits, at its exit, for the members of
// a group it sent SIGKILL to die and be reaped, so that it does not leave
// them as zombies for init (a process stuck in the kernel, state D, can
// outlive SIGKILL for as long as the kernel holds it).
const killGrace = 2 * time.Second

// killedGroup records that group pgid got SIGKILL just now.
func (l *loop) killedGroup(pgid int) {
	if l.linger.killed == nil {
		l.linger.killed = make(map[int]bool)
	}
	l.linger.killed[pgid] = true
	l.linger.groups[pgid] = l.sys.Now() + int64(killGrace)
}

// lingerPoll bounds how long the master waits, at its exit, before it looks
// at a lingering group again (a member whose parent is another member is
// not the master's child: its exit sends the master no SIGCHLD).
const lingerPoll = 100 * time.Millisecond

// noteGroupSignal records a signal the core sent to a worker's group.
func (l *loop) noteGroupSignal(pid int, sig syscall.Signal) {
	switch {
	case sig == syscall.SIGKILL:
		l.linger.sent[pid] = -1
	case fsm.Signal(sig) == l.stopSignal:
		if _, ok := l.linger.sent[pid]; !ok {
			l.linger.sent[pid] = l.sys.Now()
		}
	}
}

// workerGone acts on the exit of worker pid, just reaped: the rest of its
// group gets the stop signal, and SIGKILL is armed.
func (l *loop) workerGone(pid int) {
	sentAt, signalled := l.linger.sent[pid]
	delete(l.linger.sent, pid)
	if sentAt < 0 {
		// The group got SIGKILL: its members are dying, to be reaped
		// before the master exits.
		l.killedGroup(pid)
		return
	}
	deadline := l.sys.Now() + int64(l.stopTimeout)
	if signalled {
		deadline = sentAt + int64(l.stopTimeout)
	} else {
		switch l.signalGroup(pid, syscall.Signal(l.stopSignal)) {
		case groupGone:
			return
		case groupSignalled:
			l.logf(slog.LevelInfo, "the worker left processes behind in its process group: they get the stop signal, and SIGKILL after --stop-timeout",
				"pgid", pid, "signal", l.stopSignal.String(), "stop_timeout", l.stopTimeout.String())
		}
	}
	l.linger.groups[pid] = deadline
}

type groupState int

const (
	groupGone      groupState = iota // no member, or the number names another group
	groupSignalled                   // the signal went to its members
	groupFailed                      // kill failed otherwise (logged)
)

// signalGroup sends sig to the process group pgid of a reaped worker, by
// the rule above.
func (l *loop) signalGroup(pgid int, sig syscall.Signal) groupState {
	if pgid <= 1 {
		return groupGone
	}
	if err := l.sys.Kill(pgid, 0); !errors.Is(err, syscall.ESRCH) {
		return groupGone // pid pgid is another process's now
	}
	err := l.sys.Kill(-pgid, sig)
	switch {
	case err == nil:
		return groupSignalled
	case errors.Is(err, syscall.ESRCH):
		return groupGone
	}
	l.logf(slog.LevelWarn, "cannot signal what a worker left in its process group", "pgid", pgid, "signal", fsm.Signal(sig).String(), "err", err.Error())
	return groupFailed
}

// lingerDue sends SIGKILL to the groups whose deadline has passed.
func (l *loop) lingerDue() {
	now := l.sys.Now()
	for pgid, at := range l.linger.groups {
		if at > now {
			continue
		}
		if l.linger.killed[pgid] {
			delete(l.linger.groups, pgid)
			delete(l.linger.killed, pgid)
			if l.signalGroup(pgid, 0) == groupSignalled {
				l.logf(slog.LevelWarn, "processes a worker left in its process group are still there after SIGKILL: left behind", "pgid", pgid, "grace", killGrace.String())
			}
			continue
		}
		if l.signalGroup(pgid, syscall.SIGKILL) == groupSignalled {
			l.logf(slog.LevelWarn, "processes a worker left in its process group outlived --stop-timeout: SIGKILL", "pgid", pgid)
			l.killedGroup(pgid)
		} else {
			delete(l.linger.groups, pgid)
		}
	}
}

// lingerNext is the earliest SIGKILL deadline.
func (l *loop) lingerNext() (int64, bool) {
	var first int64
	ok := false
	for _, at := range l.linger.groups {
		if !ok || at < first {
			first, ok = at, true
		}
	}
	return first, ok
}

// lingerSweep forgets the groups that have no member left.
func (l *loop) lingerSweep() {
	for pgid := range l.linger.groups {
		if l.signalGroup(pgid, 0) != groupSignalled {
			delete(l.linger.groups, pgid)
			delete(l.linger.killed, pgid)
		}
	}
}

// finishLingering runs once the machine has said Exit: the master does not
// leave before what its workers left behind is gone, for --stop-timeout at
// most (then SIGKILL), reaping the orphans meanwhile. Nothing else is
// served then: signals are read and dropped (the stop signal was sent).
func (l *loop) finishLingering() {
	// What died before now may have no SIGCHLD left to come (it was
	// merged with the worker's): reap before each look, or a zombie of
	// the master's own would count as a member for ever.
	l.reapOrphans()
	l.lingerSweep()
	if len(l.linger.groups) == 0 {
		return
	}
	l.logf(slog.LevelInfo, "waiting for what the workers left in their process groups to exit", "groups", len(l.linger.groups))
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(l.linger.groups) > 0 {
		at, _ := l.lingerNext()
		timer.Reset(min(lingerPoll, time.Duration(max(0, at-l.sys.Now()))))
		select {
		case s := <-l.sigs:
			if s == syscall.SIGCHLD {
				l.reapOrphans()
			}
		case <-timer.C:
		}
		timer.Stop()
		l.lingerDue()
		l.reapOrphans()
		l.lingerSweep()
	}
	l.reapOrphans()
}

// reapOrphans reaps every child that has exited, without telling the
// machine (it has exited).
func (l *loop) reapOrphans() {
	for {
		var ws syscall.WaitStatus
		pid, err := l.sys.Wait4(-1, &ws, syscall.WNOHANG)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
