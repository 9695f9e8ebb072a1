package fsm

import (
	"context"
	"fmt"
	"slices"

	"github.com/qmuntal/stateless"
)

// The callbacks of the transition table. Each one reads the event being
// stepped from the machine, updates its data and appends actions; none does
// anything else. They are named functions so that the generated graph shows
// what happens on each edge.

func spawnFirstGeneration(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	m.cur, m.maxGen = 1, 1
	m.addGen(1)
	m.log(LevelInfo, "starting workers", "generation", 1, "workers", m.size)
	for slot := range m.size {
		m.startWorker(1, slot)
	}
	return nil
}

func resumeAndSpawnNext(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	h := m.cfg.Resume
	m.cur, m.maxGen = h.Generation, max(h.MaxGeneration, h.Generation)
	m.reloads, m.failedReload = h.Reloads, h.FailedReloads
	m.announced = h.Announced
	m.exitStatus = h.ExitStatus
	m.requests = slices.Clone(h.Requests)
	if h.Size > 0 && h.Size <= MaxWorkers {
		m.size = h.Size // scaled before the exec: the size outlives it
		m.growSlots()
	}
	copy(m.failures, h.Failures)
	copy(m.limitCounts, h.LimitCounts)
	m.begun, m.trigger, m.last = h.ReloadsBegun, h.ReloadTrigger, h.LastReload.clone()
	if m.begun == 0 { // from an image that did not count them
		m.begun = h.Reloads + h.FailedReloads + 1
	}
	if m.trigger == "" {
		m.trigger = "re-exec"
	}
	m.restarts, m.backoffs = slices.Clone(h.Restarts), slices.Clone(h.Backoffs)
	m.addGen(m.cur)
	for _, hw := range h.Workers {
		if hw.Pid <= 0 || m.byPid[hw.Pid] != nil || hw.Slot < 0 || hw.Slot >= MaxWorkers {
			continue
		}
		if hw.Leaving {
			w := &worker{pid: hw.Pid, gen: hw.Generation, slot: hw.Slot, ready: hw.Ready, leaving: true}
			m.leaving = append(m.leaving, w)
			m.byPid[w.pid] = w
			m.maxGen = max(m.maxGen, hw.Generation)
			continue
		}
		home := hw.Generation
		if hw.Home > 0 {
			home = hw.Home
		}
		g := m.addGen(home)
		if hw.Slot < len(g.slots) && g.slots[hw.Slot] != nil {
			// A slot holds one worker: a second one would be known by pid
			// but listed nowhere, so never signalled nor forgotten.
			m.log(LevelWarn, "handover names two workers for one slot; not adopting the second", "pid", hw.Pid, "generation", hw.Generation, "slot", hw.Slot)
			continue
		}
		g.retired = g.retired || hw.Stopping
		w := &worker{pid: hw.Pid, gen: hw.Generation, slot: hw.Slot, ready: hw.Ready && !hw.Replacing, replacing: hw.Replacing}
		g.put(w)
		m.byPid[w.pid] = w
		m.maxGen = max(m.maxGen, hw.Generation)
	}
	for _, t := range h.Timers {
		if (t.Kind == TimerRestart || t.Kind == TimerRestartWindow) && (t.Slot < 0 || t.Slot >= m.size) {
			continue // no such slot here: restarting it would index out of range
		}
		m.armed[t] = true
		if t.Kind == TimerRestart && t.Generation == m.cur {
			m.restarting[t.Slot] = true
		}
	}
	// -sf/-st pids that are not our own workers belong to another master.
	m.stopPids = foreign(append(slices.Clone(h.StopPids), m.cfg.StopPids...), m.byPid)
	m.termPids = foreign(append(slices.Clone(h.TermPids), m.cfg.TermPids...), m.byPid)

	m.maxGen++
	m.next = m.maxGen
	m.addGen(m.next)
	m.log(LevelInfo, "re-executed; starting the new generation", "generation", m.next,
		"serving", m.cur, "adopted", len(m.byPid), "trigger", m.trigger)
	// The timer first (spawnNext): with immediate readiness the generation
	// may be promoted while the spawns are still being carried out.
	m.spawnNext()
	return nil
}

func foreign(pids []int, known map[int]*worker) []int {
	var out []int
	for _, p := range pids {
		if p > 0 && known[p] == nil && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func recordWorker(m *Machine, e WorkerStarted) {
	delete(m.inflight, [2]int{e.Generation, e.Slot})
	g := m.addGen(e.Generation)
	w := &worker{pid: e.Pid, gen: e.Generation, slot: e.Slot}
	if g.retired {
		// The generation was rolled back while this spawn was under way.
		g.put(w)
		m.byPid[w.pid] = w
		if g.killed {
			m.log(LevelWarn, "worker of a killed generation started; killing it", "pid", w.id(), "generation", w.gen)
			m.kill([]int{w.pid}, SIGKILL)
			return
		}
		m.log(LevelWarn, "worker of a retired generation started; stopping it", "pid", w.id(), "generation", w.gen)
		m.kill([]int{w.pid}, m.cfg.StopSignal)
		if kt := (Timer{Kind: TimerKill, Generation: g.n}); !m.armed[kt] {
			// retire armed none if the generation had no live worker then.
			m.setTimer(kt, m.cfg.StopTimeout)
		}
		return
	}
	if e.Slot >= m.size || e.Slot < len(g.slots) && g.slots[e.Slot] != nil {
		// Scaled down while this spawn was under way (no slot for it),
		// or its slot was filled meanwhile (by a restarted worker).
		m.byPid[w.pid] = w
		w.home, w.leaving = g, true
		m.leaving = append(m.leaving, w)
		m.log(LevelInfo, "worker started for a slot it no longer has; stopping it", "pid", w.id(), "generation", w.gen, "slot", w.slot, "size", m.size)
		m.kill([]int{w.pid}, m.cfg.StopSignal)
		m.setTimer(Timer{Kind: TimerKillWorker, Pid: w.pid}, m.cfg.StopTimeout)
		return
	}
	w.ready = m.cfg.Ready.Kind == ReadyImmediate
	g.put(w)
	m.byPid[w.pid] = w
	m.log(LevelInfo, "worker started", "pid", w.id(), "generation", w.gen, "slot", w.slot)
	if m.cfg.Ready.Kind == ReadyAfter {
		m.setTimer(Timer{Kind: TimerReadyAfter, Pid: w.pid}, m.cfg.Ready.After)
	}
	// Only a slot that has failed has a backoff to reset: a worker of a
	// fresh slot (every worker of a new generation) needs no timer.
	if w.gen == m.cur && w.slot < len(m.failures) && m.failures[w.slot] > 0 {
		m.setTimer(Timer{Kind: TimerStable, Pid: w.pid}, m.cfg.Backoff.Reset)
		if !m.quickWarned {
			// Only while the warning about quick deaths may still come:
			// a crash loop already warned about costs no timer more.
			m.setTimer(Timer{Kind: TimerQuick, Pid: w.pid}, QuickDeath)
		}
	}
}

func workerFailedToStart(m *Machine, e SpawnFailed) {
	delete(m.inflight, [2]int{e.Generation, e.Slot})
	m.log(LevelError, "worker failed to start", "generation", e.Generation, "slot", e.Slot, "status", statusAttr(e.Status), "err", e.Err)
	g := m.gen(e.Generation)
	switch {
	case m.repl != nil && e.Generation == m.repl.gen:
		m.repl.failure = "the replacement failed to start: " + e.Err
		m.dropGenIfEmpty(g)
	case e.Slot >= m.size && g != nil && !g.retired:
		// A slot scaled away while its spawn was under way.
		m.dropGenIfEmpty(g)
	case m.state == stateAwaitingReady && e.Generation == m.next:
		m.failure = fmt.Sprintf("slot %d of generation %d failed to start: %s", e.Slot, e.Generation, e.Err)
	case g != nil && m.isCurrent(g):
		m.noteQuickDeath(e.Slot)
		m.afterCurrentExit(e.Slot, e.Status)
	case g != nil:
		m.dropGenIfEmpty(g)
	}
}

func markReady(m *Machine) {
	var pid int
	switch e := m.ev.(type) {
	case WorkerReady:
		pid = e.Pid
	case TimerFired:
		pid = e.Timer.Pid
	}
	w := m.byPid[pid]
	if w == nil {
		m.log(LevelError, "fsm: ready for no known worker (a bug in classify)", "event", m.ev.String())
		return
	}
	w.ready = true
	w.home.ready++
	m.cancelTimer(Timer{Kind: TimerReadyAfter, Pid: pid})
	m.log(LevelInfo, "worker ready", "pid", pid, "generation", w.gen, "slot", w.slot)
}

// removeWorker forgets a reaped worker and the timers about it. A worker
// that was leaving on its own belongs to no slot table: it returns nil.
func (m *Machine) removeWorker(w *worker) *generation {
	delete(m.byPid, w.pid)
	if w.leaving {
		m.leaving = slices.DeleteFunc(m.leaving, func(x *worker) bool { return x == w })
		m.cancelTimer(Timer{Kind: TimerKillWorker, Pid: w.pid})
		return nil
	}
	g := w.home
	g.slots[w.slot] = nil
	g.live--
	if w.ready {
		g.ready--
	}
	m.cancelTimer(Timer{Kind: TimerStable, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerReadyAfter, Pid: w.pid})
	m.cancelTimer(Timer{Kind: TimerQuick, Pid: w.pid})
	m.unwatch(w)
	return g
}

func workerExited(m *Machine, e ChildExited) {
	w := m.byPid[e.Pid]
	if w == nil {
		reapOrphan(m, e) // classify routes these there; a new path must not panic
		return
	}
	quick := m.armed[Timer{Kind: TimerQuick, Pid: e.Pid}]
	g := m.removeWorker(w)
	switch {
	case g == nil:
		m.log(LevelInfo, "worker stopped", "pid", w.id(), "generation", w.gen, "slot", w.slot, "status", statusAttr(e.Status))
	case m.repl != nil && g.n == m.repl.gen:
		m.log(LevelError, "replacement worker exited before it was ready", "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
		m.repl.failure = fmt.Sprintf("the replacement (pid %d) exited with %s before it was ready", w.pid, e.Status)
		m.dropGenIfEmpty(g)
	case m.state == stateAwaitingReady && g.n == m.next:
		m.log(LevelError, "new worker exited before its generation was ready", "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
		m.failure = fmt.Sprintf("worker %d (slot %d of generation %d) exited with %s before the generation was ready", w.pid, w.slot, g.n, e.Status)
	case !m.isCurrent(g):
		m.log(LevelInfo, m.exitLabel(g), "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
		m.dropGenIfEmpty(g)
	default:
		m.log(LevelWarn, "worker exited", "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
		if quick {
			m.noteQuickDeath(w.slot)
		}
		m.afterCurrentExit(w.slot, m.judged(w, e.Status))
	}
}

// afterCurrentExit applies --restart to a slot of the serving generation
// whose worker exited or could not start.
func (m *Machine) afterCurrentExit(slot int, st ExitStatus) {
	m.exitStatus = st.Int()
	switch m.cfg.Restart {
	case RestartNo:
		m.culprit = &st
		return
	case RestartOnFailure:
		if !st.Failed() {
			m.log(LevelInfo, "worker exited cleanly; not restarted (--restart on-failure)", "generation", m.cur, "slot", slot)
			if m.state == stateRunning && m.servingGenDone() {
				m.culprit = &st
			}
			return
		}
	}
	if m.limitReached(slot, st) {
		return
	}
	for slot >= len(m.failures) {
		m.failures = append(m.failures, 0)
	}
	delay := m.jitter(m.cfg.Backoff.delay(m.failures[slot]))
	if m.failures[slot] < 64 {
		m.failures[slot]++
	}
	m.noteRestart(slot, delay)
	m.restarting[slot] = true
	m.setTimer(Timer{Kind: TimerRestart, Generation: m.cur, Slot: slot}, delay)
	m.log(LevelInfo, "restarting worker after backoff", "generation", m.cur, "slot", slot, "after", delay)
}

// servingGenDone reports that the serving generation has no worker left
// and none coming back: under --restart on-failure, the run is over.
func (m *Machine) servingGenDone() bool {
	return m.gen(m.cur).live == 0 && len(m.restarting) == 0 && !m.spawning(m.cur)
}

func (m *Machine) spawning(gen int) bool {
	for k := range m.inflight {
		if k[0] == gen {
			return true
		}
	}
	return false
}

func restartSlot(m *Machine, ev TimerFired) {
	t := ev.Timer
	if t.Generation != m.cur {
		m.log(LevelDebug, "restart of an old generation skipped", "generation", t.Generation, "slot", t.Slot)
		return
	}
	delete(m.restarting, t.Slot)
	g := m.gen(m.cur)
	if m.next != 0 && t.Slot < m.rollDone {
		return // a rolling reload's new generation serves this slot now
	}
	if t.Slot >= m.size || t.Slot < len(g.slots) && g.slots[t.Slot] != nil || m.inflight[[2]int{m.cur, t.Slot}] {
		return
	}
	m.startWorker(m.cur, t.Slot)
}

func resetBackoff(m *Machine, ev TimerFired) {
	t := ev.Timer
	if w := m.byPid[t.Pid]; w != nil && !w.leaving && w.home.n == m.cur && w.slot < len(m.failures) {
		m.failures[w.slot] = 0
		m.clearBackoff(w.slot)
		m.closeRestartWindow(w.slot)
	}
}

func killStragglers(m *Machine, ev TimerFired) {
	t := ev.Timer
	var pids []int
	switch t.Kind {
	case TimerKillAll:
		pids = m.livePids(nil)
	case TimerKillWorker:
		pids = []int{t.Pid}
	default:
		pids = m.livePids(func(g *generation) bool { return g.n == t.Generation && g.retired })
	}
	if len(pids) > 0 {
		m.log(LevelWarn, "stop timeout passed; killing", "pids", pids, "timeout", m.cfg.StopTimeout)
		m.kill(pids, SIGKILL)
	}
}

func forwardToCurrent(m *Machine, ev SignalReceived) {
	sig := ev.Signal
	pids := m.livePids(m.isCurrent)
	m.log(LevelInfo, "forwarding signal to current workers", "signal", sig, "pids", pids)
	m.kill(pids, sig)
	if sig.jobControl() {
		// The master stops too, as a job: the shell it runs under sees it.
		m.emit(Suspend{Signal: sig})
	}
}

func forwardToAll(m *Machine, ev SignalReceived) {
	sig := ev.acted()
	pids := m.livePids(nil)
	m.log(LevelInfo, "forwarding signal to every worker", "signal", sig, "pids", pids)
	m.kill(pids, sig)
}

func replyStatus(m *Machine, _ ControlRequest) {
	id, _ := m.controlID()
	m.emit(Reply{ID: id, OK: true, Status: m.status()})
}

func refuseRequest(m *Machine, c ControlRequest) {
	why := requestError(c)
	if why == "" {
		// A command of the table this machine does not carry out (yet).
		why = c.Command.String() + " is not supported by this master"
	}
	m.emit(Reply{ID: c.ID, Error: why})
}

func ignoreNoise(m *Machine) {
	m.log(LevelDebug, "event ignored", "state", m.state.String(), "event", m.ev.String())
}

func reapOrphan(m *Machine, e ChildExited) {
	m.log(LevelDebug, "reaped unknown child", "pid", e.Pid, "status", statusAttr(e.Status))
}

func noteNoChildren(m *Machine) { m.log(LevelDebug, "no child left") }

// beginReload is what both kinds of reload share: the request that
// triggered it and those queued behind the last one wait for its outcome,
// and the service manager hears RELOADING=1.
func (m *Machine) beginReload() {
	m.begun++
	m.trigger = m.triggerOf()
	m.queuedTrigger = ""
	if id, ok := m.controlID(); ok {
		m.requests = append(m.requests, id)
	}
	m.requests = append(m.requests, m.queued...)
	m.queued = nil
	m.pendingReload = false
	if m.announced {
		m.emit(Notify{State: NotifyReloading})
	}
}

func execNewImage(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	m.beginReload()
	pids := m.livePids(nil)
	m.log(LevelInfo, "reloading: re-executing the master", "trigger", m.trigger, "path", m.cfg.Path, "generation", m.cur, "pids", pids)
	h := m.handover()
	h.ExitStatus = m.exitStatus
	m.emit(Exec{Path: m.cfg.Path, Argv: ReloadArgv(m.cfg.Argv, pids), Handover: h})
	return nil
}

// spawnNextInPlace starts the next generation without re-executing: the
// same image goes on supervising, and a stop that arrives meanwhile is an
// ordinary stop. It is AwaitingReady's entry action for a reload (an
// OnEntryFrom would label the state's internal Reload edge in the graph
// too); entered from Start, resumeAndSpawnNext does the work.
func spawnNextInPlace(ctx context.Context, _ ...any) error {
	if stateless.GetTransition(ctx).Trigger != trigReload {
		return nil
	}
	m := machineOf(ctx)
	m.beginReload()
	m.maxGen++
	m.next = m.maxGen
	m.addGen(m.next)
	m.log(LevelInfo, "reloading: starting the new generation", "trigger", m.trigger, "generation", m.next, "serving", m.cur)
	// The timer first (spawnNext): with immediate readiness the generation
	// may be promoted while the spawns are still being carried out.
	m.spawnNext()
	return nil
}

func abandonReload(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	e, _ := event[ExecFailed](m) // its Err, or "" on a path the table did not mean
	m.failedReload++
	reason := "cannot execute " + m.cfg.Path + ": " + e.Err
	msg := "reload failed: " + reason
	m.log(LevelError, "reload failed: the master could not re-execute; keeping the current workers", "path", m.cfg.Path, "err", e.Err, "trigger", m.trigger)
	if m.announced {
		m.emit(Notify{State: NotifyReady, Status: msg})
	}
	m.replyAll(false, msg, m.endReload(ReloadFailure, reason, 0, m.cur, nil, nil))
	return nil
}

func coalesceReload(m *Machine) {
	m.pendingReload = true
	if id, ok := m.controlID(); ok {
		m.queued = append(m.queued, id)
	}
	t := m.triggerOf()
	if m.queuedTrigger == "" {
		m.queuedTrigger = t
	}
	m.log(LevelInfo, "reload queued: it starts once the current reload or spawn is over", "trigger", t, "generation", m.cur)
}

func promoteGeneration(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	ng := m.next
	m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: ng})
	m.cancelRestarts()
	prev := m.cur
	m.cur, m.next = ng, 0
	m.endRoll()
	var retiring []*generation
	var old []int
	for _, g := range m.gens {
		if g.n != ng && !g.retired {
			retiring = append(retiring, g)
			old = append(old, m.livePids(func(x *generation) bool { return x == g })...)
		}
	}
	m.reloads++
	m.failures = make([]int, m.size)
	clear(m.backoffs)
	clear(m.quick)
	m.quickWarned = false
	// The answer goes first: the new generation serves from now on, and
	// whoever waits for the reload (mworker reload, systemd) need not wait
	// for the old workers to be signalled, nor compete with their exits.
	m.log(LevelInfo, "reload complete: new generation ready, old workers told to stop", "generation", ng, "previous", prev, "old", old, "trigger", m.trigger)
	m.announced = true
	m.notifyReady(fmt.Sprintf("generation %d ready", ng))
	m.replyAll(true, "", m.endReload(ReloadSuccess, "", ng, prev, m.livePids(func(g *generation) bool { return g.n == ng }), old))
	m.retireBounded(retiring)
	m.signalForeign()
	return nil
}

func rollBack(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	failed := m.next
	reason := m.failure
	if reason == "" {
		reason = fmt.Sprintf("generation %d was not ready within %s", failed, m.cfg.ReadyTimeout)
	}
	m.failure = ""
	m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: failed})
	kept := m.keepDoneBatches()
	m.endRoll()
	m.next = 0
	if g := m.gen(failed); g != nil {
		g.failed = true
		m.retireBounded([]*generation{g})
	}
	m.failedReload++
	if m.cfg.Restart == RestartOnFailure && m.servingGenDone() {
		// Its workers all exited 0 during the reload: nothing is left to serve.
		m.culprit = &ExitStatus{}
	}
	if kept != "" {
		reason += "; " + kept
	}
	m.log(LevelError, "reload failed: rolled back to the serving generation", "failed_generation", failed, "generation", m.cur, "reason", reason, "trigger", m.trigger)
	if m.announced {
		m.notifyReady("reload failed: " + reason)
	}
	m.replyAll(false, "reload failed: "+reason, m.endReload(ReloadFailure, reason, failed, m.cur, nil, nil))
	return nil
}

func announceReady(m *Machine) {
	m.announced = true
	m.log(LevelInfo, "all workers ready", "generation", m.cur)
	m.signalForeign()
	m.notifyReady(fmt.Sprintf("generation %d ready", m.cur))
}

// notifyReady tells the service manager READY=1 with status, unless a stop
// has begun and waits out the shutdown delay: STOPPING=1 was said, and a
// READY=1 after it would read as the stop undone.
func (m *Machine) notifyReady(status string) {
	if m.delaying {
		return
	}
	m.emit(Notify{State: NotifyReady, Status: status})
}

// signalForeign tells the processes named by -sf/-st to go, once.
func (m *Machine) signalForeign() {
	if len(m.stopPids) > 0 {
		m.emit(SignalPids{Pids: m.stopPids, Signal: m.cfg.StopSignal})
	}
	if len(m.termPids) > 0 {
		m.emit(SignalPids{Pids: m.termPids, Signal: SIGTERM})
	}
	m.stopPids, m.termPids = nil, nil
}

// enterExiting is what every way into Exiting shares: abort a reload,
// answer what waits, stop restarting, tell the service manager, arm the
// final kill.
func (m *Machine) enterExiting(sig Signal, why string, pids []int) {
	m.stopSignal = sig
	m.stopReaped = false
	delayed := m.endDelay()
	if m.repl != nil {
		m.abortRestart("mworker is stopping ("+why+")", false)
	}
	var aborted *ReloadOutcome
	if m.next != 0 {
		m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: m.next})
		m.log(LevelWarn, "reload aborted: mworker is stopping", "generation", m.next, "serving", m.cur, "trigger", m.trigger)
		aborted = m.endReload(ReloadAborted, "mworker is stopping ("+why+")", m.next, m.cur, nil, nil)
		m.next = 0
		m.failure = ""
	}
	m.endRoll()
	m.requests = append(m.requests, m.queued...)
	m.queued = nil
	m.queuedTrigger = ""
	m.pendingReload = false
	m.replyAll(false, "reload aborted: mworker is stopping ("+why+")", aborted)
	m.cancelRestarts()
	m.unwatchAll()
	if !delayed {
		m.emit(Notify{State: NotifyStopping}) // sent when the delay began
	}
	m.emit(StopListening{})
	m.kill(pids, sig)
	if len(m.byPid) > 0 || len(m.inflight) > 0 {
		m.setTimer(Timer{Kind: TimerKillAll}, m.cfg.StopTimeout)
	}
}

func beginSoftStop(ctx context.Context, _ ...any) error {
	machineOf(ctx).softStop()
	return nil
}

func (m *Machine) softStop() {
	m.log(LevelInfo, "soft stop: telling every worker to stop", "signal", m.cfg.StopSignal)
	m.enterExiting(m.cfg.StopSignal, "soft stop", m.livePids(func(g *generation) bool { return !g.retired }))
	if id, ok := m.controlID(); ok {
		m.emit(Reply{ID: id, OK: true})
	}
}

func beginTerminate(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	sig := SIGTERM
	if e, ok := event[SignalReceived](m); ok {
		sig = e.acted()
	}
	m.terminate(sig)
	return nil
}

func (m *Machine) terminate(sig Signal) {
	m.log(LevelInfo, "terminating: forwarding the signal to every worker", "signal", sig)
	m.enterExiting(sig, sig.String(), m.livePids(nil))
}

func endRun(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	st := ExitStatus{Code: m.exitStatus} // settle sets a culprit first; a new path must not panic
	if m.culprit != nil {
		st = *m.culprit
	}
	m.culprit = nil
	m.exitStatus, m.exitFixed = st.Int(), true
	why := m.endWhy
	if why == "" {
		why = "a worker exited with --restart " + m.cfg.Restart.String()
	}
	m.endWhy = ""
	m.log(LevelInfo, "a worker's exit ends the run; stopping the others", "status", statusAttr(st), "restart", m.cfg.Restart)
	m.enterExiting(m.cfg.StopSignal, why,
		m.livePids(func(g *generation) bool { return !g.retired }))
	return nil
}

func repeatSoftStop(m *Machine) {
	if id, ok := m.controlID(); ok {
		m.emit(Reply{ID: id, OK: true, Error: ""})
		return
	}
	pids := m.livePids(nil)
	m.log(LevelInfo, "soft stop again: repeating the stop signal", "signal", m.cfg.StopSignal, "pids", pids)
	m.kill(pids, m.cfg.StopSignal)
}

func refuseReload(m *Machine) {
	if id, ok := m.controlID(); ok {
		m.emit(Reply{ID: id, Error: "cannot reload: mworker is stopping"})
		return
	}
	if e, ok := event[SignalReceived](m); ok {
		m.log(LevelWarn, "reload signal ignored: mworker is stopping", "signal", e.Signal)
	}
}

func stopLateWorker(m *Machine, e WorkerStarted) {
	delete(m.inflight, [2]int{e.Generation, e.Slot})
	g := m.addGen(e.Generation)
	w := &worker{pid: e.Pid, gen: e.Generation, slot: e.Slot}
	g.put(w)
	m.byPid[w.pid] = w
	m.log(LevelInfo, "worker started while stopping; stopping it", "pid", w.id(), "generation", w.gen, "slot", w.slot)
	m.kill([]int{w.pid}, m.stopSignal)
}

func dropSpawn(m *Machine, e SpawnFailed) {
	delete(m.inflight, [2]int{e.Generation, e.Slot})
	m.log(LevelInfo, "worker failed to start while stopping", "generation", e.Generation, "slot", e.Slot, "err", e.Err)
	if g := m.gen(e.Generation); g != nil {
		m.dropGenIfEmpty(g)
	}
}

func workerExitedWhileExiting(m *Machine, e ChildExited) {
	w := m.byPid[e.Pid]
	if w == nil {
		reapOrphan(m, e)
		return
	}
	g := m.removeWorker(w)
	if g == nil {
		m.log(LevelInfo, "worker stopped", "pid", w.id(), "generation", w.gen, "slot", w.slot, "status", statusAttr(e.Status))
		return
	}
	if m.isCurrent(g) {
		// The first failure since the stop began, whatever the order the
		// others are reaped in; 0 when every one succeeded.
		if st := m.judged(w, e.Status).Int(); !m.exitFixed && (!m.stopReaped || m.succeeded(m.exitStatus)) {
			m.exitStatus = st
		}
		m.stopReaped = true
		m.log(LevelInfo, "worker exited", "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
	} else {
		// Of an old generation, of one rolled back, or of the generation
		// a reload was starting when the stop began: not serving, so its
		// status is not the master's either.
		m.log(LevelInfo, m.exitLabel(g), "pid", w.id(), "generation", g.n, "slot", w.slot, "status", statusAttr(e.Status))
	}
	m.dropGenIfEmpty(g)
}

// succeeded says whether st, as the master's exit status, counts as
// success: 0, or a --success-exit status.
func (m *Machine) succeeded(st int) bool {
	return st == 0 || slices.Contains(m.cfg.SuccessExit, st)
}

func exitMaster(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	m.log(LevelInfo, "all workers gone; exiting", "status", m.exitStatus)
	st := m.exitStatus
	if st != 0 && m.succeeded(st) {
		m.log(LevelInfo, "exit status counts as success (--success-exit)", "status", st)
		st = 0
	}
	m.emit(Exit{Status: st})
	return nil
}

// exitLabel names the exit of a worker of g, which does not serve: of a
// generation rolled back (a failed reload or restart SLOT), of one a
// reload was starting (aborted by a stop), or of an old one.
func (m *Machine) exitLabel(g *generation) string {
	switch {
	case g.failed:
		return "worker of a rolled-back generation exited"
	case g.n > m.cur:
		return "new worker exited"
	}
	return "old worker exited"
}
