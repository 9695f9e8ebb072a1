package fsm

// The workers' watchdog (--watchdog D, Config.Watchdog). A worker opts in
// by sending WATCHDOG=1 (WorkerWatchdog): from its first ping on it is
// watched, and each ping re-arms its TimerWatchdog to fire D later. When
// the timer fires, or the worker sends WATCHDOG=trigger, it has hung: it
// gets the stop signal, and SIGKILL after StopTimeout (TimerKillWorker),
// but unlike a worker scaled away it keeps its slot until it is reaped, so
// that its exit takes the usual path: --restart restarts the slot after
// the backoff, or ends the run, or a reload waiting for it fails. That
// exit counts as a failure whatever its status: a clean one counts as
// death by the stop signal, so that --restart on-failure replaces it too.
//
// Only workers that serve are watched: those of the serving generation and
// of the one being readied, not yet told to stop. A worker of a retired
// generation, one leaving on its own, one already being replaced, and every
// worker once the master is stopping, is not; its timer is cancelled as it
// stops being watched. A worker that never sent WATCHDOG=1 is never judged.
// The core has no clock: "silent for D" is the timer, which the caller
// re-arms at each SetTimer (doc.go, duty 6).

import (
	"github.com/qmuntal/stateless"
)

// watched returns the worker pid when the watchdog judges it now, or nil.
func (m *Machine) watched(pid int) *worker {
	w := m.byPid[pid]
	switch {
	case m.cfg.Watchdog <= 0, w == nil, w.leaving, w.replacing, m.state == stateExiting:
		return nil
	case w.home.retired, w.home.n != m.cur && w.home.n != m.next:
		return nil
	}
	return w
}

// watchdogTrigger classifies a ping (failed false) or a hang (WATCHDOG=trigger,
// or the worker's TimerWatchdog firing) of worker pid.
func (m *Machine) watchdogTrigger(pid int, failed bool) stateless.Trigger {
	switch {
	case m.watched(pid) == nil:
		return trigNoise
	case failed:
		return trigWatchdogFailed
	}
	return trigWatchdogPing
}

// rearmWatchdog: WATCHDOG=1 from a watched worker. The first one turns its
// watchdog on; each one moves the deadline to D from now.
func rearmWatchdog(m *Machine, e WorkerWatchdog) {
	w := m.watched(e.Pid)
	if w == nil {
		return // classify routes only watched workers here
	}
	t := Timer{Kind: TimerWatchdog, Pid: w.pid}
	if !m.armed[t] {
		m.log(LevelInfo, "worker watchdog on: it is replaced if it sends no WATCHDOG=1 for the period",
			"pid", w.id(), "generation", w.gen, "slot", w.slot, "watchdog", m.cfg.Watchdog)
	}
	m.setTimer(t, m.cfg.Watchdog)
}

// replaceHungWorker: a watched worker sent no WATCHDOG=1 for D, or sent
// WATCHDOG=trigger.
func replaceHungWorker(m *Machine) {
	switch e := m.ev.(type) {
	case WorkerWatchdog:
		if w := m.watched(e.Pid); w != nil {
			m.log(LevelWarn, "worker hung: it asked to be replaced (WATCHDOG=trigger); stopping it, and its exit counts as a failure",
				"pid", w.id(), "generation", w.gen, "slot", w.slot, "signal", m.cfg.StopSignal)
			m.replaceWorker(w)
		}
	case TimerFired:
		if w := m.watched(e.Timer.Pid); w != nil {
			m.log(LevelWarn, "worker hung: no WATCHDOG=1 for "+m.cfg.Watchdog.String()+"; stopping it, and its exit counts as a failure",
				"pid", w.id(), "generation", w.gen, "slot", w.slot, "signal", m.cfg.StopSignal)
			m.replaceWorker(w)
		}
	}
}

// replaceWorker stops a hung worker: the stop signal now, SIGKILL after
// StopTimeout. It stays in its slot, no longer ready nor watched, and
// its timers of a worker that serves are gone.
func (m *Machine) replaceWorker(w *worker) {
	w.replacing = true
	if w.ready {
		w.ready = false
		w.home.ready--
	}
	m.cancelTimer(Timer{Kind: TimerWatchdog, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerStable, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerReadyAfter, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerQuick, Pid: w.pid})
	m.kill([]int{w.pid}, m.cfg.StopSignal)
	m.setTimer(Timer{Kind: TimerKillWorker, Pid: w.pid}, m.cfg.StopTimeout)
}

// judged is what the exit of w counts as: a worker the watchdog stopped
// failed, so a clean exit counts as death by the stop signal.
func (m *Machine) judged(w *worker, st ExitStatus) ExitStatus {
	if w.replacing && !st.Failed() {
		return ExitStatus{Signal: m.cfg.StopSignal}
	}
	return st
}

// unwatch forgets the watchdog's timers of a reaped worker of a slot: its
// deadline, and its SIGKILL if the watchdog stopped it.
func (m *Machine) unwatch(w *worker) {
	m.cancelTimer(Timer{Kind: TimerWatchdog, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerKillWorker, Pid: w.pid})
}

// unwatchGen stops watching the workers of g, as it is retired.
func (m *Machine) unwatchGen(g *generation) {
	for _, w := range g.slots {
		if w != nil {
			m.cancelTimer(Timer{Kind: TimerWatchdog, Pid: w.pid})
		}
	}
}

// unwatchAll stops watching every worker, as the master begins to stop.
func (m *Machine) unwatchAll() {
	for _, g := range m.gens {
		m.unwatchGen(g)
	}
}
