package fsm

// Rolling reloads (Config.Batch). The next generation starts a batch of
// slots at a time. When every worker of the batch is ready, the serving
// generation's workers of those slots are told to stop on their own
// (stopWorker); once they are gone, the next batch starts, with a ready
// timeout of its own. When the last batch is ready the new generation is
// promoted as in any reload (what is left of the old one is retired). If a
// batch fails, the batches before it are kept: their workers, ready and
// serving, move into the serving generation's slot table (worker.home);
// the failed batch and the slots after it keep the old workers. The
// reload counts as failed and its requests hear which slots run which
// generation.

import (
	"fmt"
)

// rolling reports a rolling reload in progress.
func (m *Machine) rolling() bool { return m.roll && m.next != 0 }

// endRoll forgets the rolling reload: it was promoted, rolled back or
// stopped.
func (m *Machine) endRoll() { m.roll, m.rollDone, m.rollEnd, m.rollWait = false, 0, 0, nil }

// spawnBatch starts the next batch of the next generation, from slot
// rollEnd, and arms its ready timeout.
func (m *Machine) spawnBatch() {
	from := m.rollEnd
	m.rollEnd = min(from+m.cfg.Batch, m.size)
	if from > 0 {
		m.cancelTimer(Timer{Kind: TimerReadyTimeout, Generation: m.next})
		m.log(LevelInfo, "rolling reload: starting the next batch", "generation", m.next, "slots", slotsAttr(from, m.rollEnd-1))
	}
	m.setTimer(Timer{Kind: TimerReadyTimeout, Generation: m.next}, m.cfg.ReadyTimeout)
	for slot := from; slot < m.rollEnd; slot++ {
		m.startWorker(m.next, slot)
	}
}

// spawnNext starts the next generation: all of it, or its first batch.
func (m *Machine) spawnNext() {
	m.endRoll()
	if m.cfg.Batch > 0 && m.cfg.Batch < m.size {
		m.roll = true
		m.spawnBatch()
		return
	}
	m.setTimer(Timer{Kind: TimerReadyTimeout, Generation: m.next}, m.cfg.ReadyTimeout)
	for slot := range m.size {
		m.startWorker(m.next, slot)
	}
}

// batchReady reports that the batch under way (slots rollDone..rollEnd-1)
// is ready and its old workers have not been told yet.
func (m *Machine) batchReady() bool {
	if m.rollDone >= m.rollEnd {
		return false
	}
	g := m.gen(m.next)
	if g == nil {
		return false
	}
	for slot := m.rollDone; slot < m.rollEnd && slot < m.size; slot++ {
		if slot >= len(g.slots) || g.slots[slot] == nil || !g.slots[slot].ready {
			return false
		}
	}
	return true
}

// batchDrained reports that the old workers of the last ready batch are
// gone, and another batch is due.
func (m *Machine) batchDrained() bool {
	if m.rollDone != m.rollEnd || m.rollEnd >= m.size {
		return false
	}
	for _, pid := range m.rollWait {
		if m.byPid[pid] != nil {
			return false
		}
	}
	return true
}

// retireBatch tells the serving generation's workers of the ready batch's
// slots to stop, and forgets restarts due for those slots: the new
// generation serves them from now on.
func retireBatch(m *Machine) {
	cg := m.gen(m.cur)
	m.rollWait = m.rollWait[:0]
	var pids []int
	for slot := m.rollDone; slot < m.rollEnd; slot++ {
		if slot < len(cg.slots) && cg.slots[slot] != nil {
			w := cg.slots[slot]
			pids = append(pids, w.pid)
			m.rollWait = append(m.rollWait, w.pid)
			m.stopWorker(w, m.cfg.StopSignal)
		}
		if m.restarting[slot] {
			delete(m.restarting, slot)
			m.cancelTimer(Timer{Kind: TimerRestart, Generation: m.cur, Slot: slot})
		}
	}
	m.log(LevelInfo, "rolling reload: batch ready, its old workers told to stop", "generation", m.next,
		"slots", slotsAttr(m.rollDone, m.rollEnd-1), "old", pids)
	m.rollDone = m.rollEnd
}

func startNextBatch(m *Machine) { m.spawnBatch() }

// keepDoneBatches, on a failed rolling reload, moves the ready workers of
// the batches that completed into the serving generation's slot table,
// and starts a worker of the serving generation for any of those slots
// left empty. It returns what the reply says about it, or "" when no batch
// had completed.
func (m *Machine) keepDoneBatches() string {
	if !m.roll || m.rollDone == 0 {
		return ""
	}
	ng, cg := m.gen(m.next), m.gen(m.cur)
	for slot := 0; slot < m.rollDone && slot < m.size; slot++ {
		var w *worker
		if ng != nil && slot < len(ng.slots) {
			w = ng.slots[slot]
		}
		switch {
		case w != nil && slot < len(cg.slots) && cg.slots[slot] != nil:
			// Filled meanwhile (cannot happen: the slot's old worker left).
		case w != nil:
			ng.slots[slot] = nil
			ng.live--
			if w.ready {
				ng.ready--
			}
			cg.put(w)
		case !m.inflight[[2]int{m.cur, slot}] && !m.restarting[slot] && (slot >= len(cg.slots) || cg.slots[slot] == nil):
			m.startWorker(m.cur, slot)
		}
	}
	batches := (m.size + m.cfg.Batch - 1) / m.cfg.Batch
	return fmt.Sprintf("batch %d of %d failed; %s keep generation %d, %s generation %d",
		m.rollDone/m.cfg.Batch+1, batches, slotRange(0, m.rollDone-1), m.next, slotRange(m.rollDone, m.size-1), m.cur)
}

// slotsAttr is slots a..b as a log attribute: "3" or "0-3".
func slotsAttr(a, b int) string {
	if a == b {
		return fmt.Sprint(a)
	}
	return fmt.Sprintf("%d-%d", a, b)
}

// slotRange names slots a..b: "slot 3" or "slots 0-3".
func slotRange(a, b int) string {
	if a == b {
		return fmt.Sprintf("slot %d", a)
	}
	return fmt.Sprintf("slots %d-%d", a, b)
}
