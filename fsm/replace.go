package fsm

// Restarting one worker without downtime (restart SLOT). The replacement
// is a worker of a generation of its own (the next number, so that status
// and logs tell it from the worker it replaces), started in a slot table of
// its own; once it is ready by the usual --ready rule, the old worker of the
// slot is told to stop on its own (stopWorker) and the replacement moves
// into the serving generation's slot table (worker.home), keeping its
// generation number. If it exits, fails to start or is not ready within
// ReadyTimeout, the old worker keeps serving and the request is answered
// with the reason. One restart at a time; a reload waits for it; a stop
// aborts it.

import (
	"strconv"
)

// replacement is a restart SLOT in progress.
type replacement struct {
	slot    int
	gen     int // the replacement's generation
	old     int // pid of the worker it replaces
	id      RequestID
	failure string // why the replacement failed, once it has
}

// parseSlot reads a restart argument: a slot of the pool.
func parseSlot(arg string, size int) (int, string) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 0 || arg[0] == '+' || n >= size {
		return 0, "restart: bad slot " + strconv.Quote(arg) + ": use a slot number from 0 to " + strconv.Itoa(size-1) +
			" (mworker status lists them)"
	}
	return n, ""
}

func restartOne(m *Machine, c ControlRequest) {
	slot, why := parseSlot(c.Arg, m.size)
	cg := m.gen(m.cur)
	switch {
	case why != "":
	case m.repl != nil:
		why = "restart: slot " + strconv.Itoa(m.repl.slot) + " is being restarted: try again once that is over"
	case slot >= len(cg.slots) || cg.slots[slot] == nil:
		why = "restart: slot " + strconv.Itoa(slot) + " has no worker now (it is being restarted after an exit): try again once it runs"
	}
	if why != "" {
		m.emit(Reply{ID: c.ID, Error: why})
		return
	}
	old := cg.slots[slot]
	m.maxGen++
	m.repl = &replacement{slot: slot, gen: m.maxGen, old: old.pid, id: c.ID}
	m.addGen(m.maxGen)
	m.log(LevelInfo, "restarting one worker: starting its replacement", "slot", slot, "pid", old.id(), "generation", m.maxGen)
	m.setTimer(Timer{Kind: TimerReadyTimeout, Generation: m.maxGen}, m.cfg.ReadyTimeout)
	m.startWorker(m.maxGen, slot)
}

// replacementReady reports that the replacement in progress is ready.
func (m *Machine) replacementReady() bool {
	g := m.gen(m.repl.gen)
	return g != nil && m.repl.slot < len(g.slots) && g.slots[m.repl.slot] != nil && g.slots[m.repl.slot].ready
}

func completeRestart(m *Machine) {
	if m.repl == nil || !m.replacementReady() {
		return // settle fires it only then; a new path must not panic
	}
	r := m.repl
	m.repl = nil
	g := m.gen(r.gen)
	w := g.slots[r.slot]
	m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: r.gen})
	cg := m.gen(m.cur)
	old := 0
	if o := cg.slots[r.slot]; o != nil {
		// The worker it replaces, or the one restarted in its place if it
		// died meanwhile.
		old = o.pid
		m.stopWorker(o, m.cfg.StopSignal)
	}
	if m.restarting[r.slot] {
		delete(m.restarting, r.slot)
		m.cancelTimer(Timer{Kind: TimerRestart, Generation: m.cur, Slot: r.slot})
	}
	g.slots[r.slot] = nil
	g.live--
	g.ready--
	cg.put(w)
	m.dropGenIfEmpty(g)
	m.log(LevelInfo, "worker restarted: its replacement is ready, the old one told to stop", "slot", r.slot, "pid", w.id(), "generation", w.gen, "old", old)
	m.emit(Reply{ID: r.id, OK: true, Status: m.status()})
}

func failRestart(m *Machine) {
	if m.repl != nil {
		m.abortRestart("", true)
	}
}

// abortRestart ends the restart in progress without replacing anything:
// the request is answered with why (or the failure recorded), and the
// replacement, if it runs, is told to stop unless stopIt is false (the
// stop of everything that aborts it tells it).
func (m *Machine) abortRestart(why string, stopIt bool) {
	r := m.repl
	m.repl = nil
	if why == "" {
		why = r.failure
	}
	if why == "" {
		why = "the replacement was not ready within " + m.cfg.ReadyTimeout.String()
	}
	m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: r.gen})
	if g := m.gen(r.gen); g != nil {
		g.failed = true
	}
	if g := m.gen(r.gen); g != nil && stopIt {
		if w := g.slots[r.slot]; w != nil {
			m.stopWorker(w, m.cfg.StopSignal)
		}
		m.dropGenIfEmpty(g)
	}
	m.log(LevelError, "restart of one worker failed: the old worker keeps serving", "slot", r.slot, "pid", r.old, "reason", why)
	m.emit(Reply{ID: r.id, Error: "restart of slot " + strconv.Itoa(r.slot) + " failed: " + why +
		"; worker " + strconv.Itoa(r.old) + " keeps serving"})
}

func refuseDuringReload(m *Machine, c ControlRequest) {
	m.emit(Reply{ID: c.ID, Error: "cannot " + c.Command.String() + " during a reload: try again once it is over"})
}
