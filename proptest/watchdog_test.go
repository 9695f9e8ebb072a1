package proptest

import (
	"sync/atomic"

	"github.com/mworker/mworker/fsm"
	"pgregory.net/rapid"
)

// watchdogStats counts what the default run exercised, logged by
// TestMachine: pings that (re-)armed a timer, and hung workers stopped.
var watchdogStats struct{ pings, hangs atomic.Int64 }

// The workers' watchdog in the reference model, from docs/design.md
// ("Watchdog"): with --watchdog D, a worker that serves (of the serving
// generation, or of the one a reload is readying, not told to stop in any
// way, while the master is not stopping) is watched once it sends
// WATCHDOG=1; each ping sets its timer to D. When the timer fires, or it
// sends WATCHDOG=trigger, it gets the stop signal and SIGKILL after the
// stop timeout, keeps its slot, is no longer ready, loses its timers of a
// serving worker, and its exit counts as a failure. Its timer goes as soon
// as it is no longer watched.

// watched returns the child pid when the watchdog judges it now, or nil.
func (m *model) watched(pid int) *child {
	c := m.workers[pid]
	if m.cfg.Watchdog <= 0 || c == nil || c.leaving || c.replacing || m.retired[c.home] {
		return nil
	}
	switch {
	case m.phase == phRunning && c.home == m.cur:
	case m.phase == phAwaiting && (c.home == m.cur || c.home == m.next):
	default:
		return nil
	}
	return c
}

// watchdog is WATCHDOG=1 or WATCHDOG=trigger from pid.
func (m *model) watchdog(x *expectation, e fsm.WorkerWatchdog) {
	if m.watched(e.Pid) == nil {
		x.noise = true
		return
	}
	if e.Trigger {
		m.replace(x, e.Pid)
		return
	}
	watchdogStats.pings.Add(1)
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerWatchdog, Pid: e.Pid}, m.cfg.Watchdog)
}

// replace stops a hung worker.
func (m *model) replace(x *expectation, pid int) {
	watchdogStats.hangs.Add(1)
	c := m.workers[pid]
	c.replacing, c.ready = true, false
	for _, k := range []fsm.TimerKind{fsm.TimerWatchdog, fsm.TimerStable, fsm.TimerReadyAfter, fsm.TimerQuick} {
		m.cancelTimer(x, fsm.Timer{Kind: k, Pid: pid})
	}
	x.kill([]int{pid}, m.cfg.StopSignal)
	m.setTimer(x, fsm.Timer{Kind: fsm.TimerKillWorker, Pid: pid}, m.cfg.StopTimeout)
}

// unwatch cancels the watchdog timers of pids, which stop being watched.
func (m *model) unwatch(x *expectation, pids []int) {
	for _, pid := range pids {
		m.cancelTimer(x, fsm.Timer{Kind: fsm.TimerWatchdog, Pid: pid})
	}
}

// judged is the status the exit of c counts as: a worker the watchdog
// stopped failed, and a clean exit counts as death by the stop signal.
func (m *model) judged(c *child, st fsm.ExitStatus) fsm.ExitStatus {
	if c.replacing && shellStatus(st) == 0 {
		return fsm.ExitStatus{Signal: m.cfg.StopSignal}
	}
	return st
}

// drawWatchdog draws a worker's WATCHDOG=1 (mostly) or WATCHDOG=trigger:
// mostly from a live worker that may be watched, sometimes from any pid.
func (h *harness) drawWatchdog(label string) fsm.WorkerWatchdog {
	mo := h.model
	pid, ok := h.pick(label, mo.pids(func(c *child) bool { return !c.leaving && !mo.retired[c.home] }))
	if !ok || rapid.IntRange(0, 4).Draw(h.t, label+"Any") == 0 {
		pid = h.drawPid(label)
	}
	return fsm.WorkerWatchdog{Pid: pid, Trigger: rapid.IntRange(0, 7).Draw(h.t, label+"Trigger") == 0}
}
