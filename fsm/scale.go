package fsm

// Scaling the pool at run time. The desired size is state, not
// configuration: Config.Workers only seeds it; a scale request changes it;
// the handover carries it across every re-exec (Handover.Size) and status
// reports it (Status.Size). Up: the new slots start at once in the serving
// generation (and in the one a reload is readying), and count as ready by
// the usual --ready rule. Down: the highest slots' workers leave on their
// own (stopWorker: the stop signal, then SIGKILL after StopTimeout) and
// are not restarted.

import (
	"strconv"
	"strings"
)

// parseScale reads a scale argument, N, +K or -K, against the current size.
// It returns the new size, or why the argument is refused.
func parseScale(arg string, size int) (int, string) {
	digits := strings.TrimLeft(arg, "+-")
	n, err := strconv.Atoi(digits)
	if err != nil || digits == "" || len(arg)-len(digits) > 1 || digits[0] == '+' || digits[0] == '-' {
		return 0, "scale: bad argument " + strconv.Quote(arg) + ": use N, +K or -K (a whole number)"
	}
	switch arg[0] {
	case '+':
		n = size + n
	case '-':
		n = size - n
	}
	if n < 1 || n > MaxWorkers {
		return 0, "scale " + arg + ": " + strconv.Itoa(n) + " workers is out of range: use 1.." + strconv.Itoa(MaxWorkers) +
			" (the pool has " + strconv.Itoa(size) + ")"
	}
	return n, ""
}

// growSlots makes the per-slot state of the serving generation as long as
// the desired size.
func (m *Machine) growSlots() {
	for len(m.failures) < m.size {
		m.failures = append(m.failures, 0)
	}
	if m.cfg.RestartLimit.Count > 0 {
		for len(m.limitCounts) < m.size {
			m.limitCounts = append(m.limitCounts, 0)
		}
	}
}

func scalePool(m *Machine, c ControlRequest) {
	n, why := parseScale(c.Arg, m.size)
	if why != "" {
		m.emit(Reply{ID: c.ID, Error: why})
		return
	}
	old := m.size
	m.size = n
	m.growSlots()
	if m.repl != nil && m.repl.slot >= n {
		m.abortRestart("slot "+strconv.Itoa(m.repl.slot)+" was scaled away", true)
	}
	if n != old {
		m.log(LevelInfo, "scaling the pool", "from", old, "to", n, "generation", m.cur)
	}
	for _, gn := range [2]int{m.cur, m.next} {
		g := m.gen(gn)
		if gn == 0 || g == nil || g.retired {
			continue
		}
		if gn == m.next && m.rolling() {
			// The batches go on up to the new size; slots scaled away
			// are done.
			m.rollDone, m.rollEnd = min(m.rollDone, n), min(m.rollEnd, n)
			if n > old {
				continue
			}
		}
		if n > old {
			for slot := old; slot < n; slot++ {
				taken := slot < len(g.slots) && g.slots[slot] != nil
				if taken || m.inflight[[2]int{gn, slot}] || gn == m.cur && m.restarting[slot] {
					continue
				}
				m.startWorker(gn, slot)
			}
			continue
		}
		for slot := n; slot < len(g.slots); slot++ {
			if w := g.slots[slot]; w != nil {
				m.log(LevelInfo, "scaled down: stopping the worker of a removed slot", "pid", w.id(), "generation", w.gen, "slot", slot)
				m.stopWorker(w, m.cfg.StopSignal)
			}
		}
		if gn == m.cur {
			m.forgetSlots(n, old)
		}
	}
	m.emit(Reply{ID: c.ID, OK: true, Status: m.status()})
	if m.state == stateRunning && m.cfg.Restart == RestartOnFailure && m.servingGenDone() {
		// The slots left had exited 0 and are not restarted (--restart
		// on-failure): nothing is left to serve, the run is over.
		m.culprit = &ExitStatus{}
	}
}

// forgetSlots drops what the serving generation keeps about slots from..to-1
// that no longer exist: restarts due, backoffs, restart-limit windows,
// quick-death streaks.
func (m *Machine) forgetSlots(from, to int) {
	for slot := from; slot < to; slot++ {
		if m.restarting[slot] {
			delete(m.restarting, slot)
			m.cancelTimer(Timer{Kind: TimerRestart, Generation: m.cur, Slot: slot})
		}
		m.closeRestartWindow(slot)
		if slot < len(m.failures) {
			m.failures[slot] = 0
		}
		m.clearBackoff(slot)
		if slot < len(m.restarts) {
			m.restarts[slot] = 0
		}
		if slot < len(m.quick) {
			m.quick[slot] = 0
		}
	}
}

func refuseWhileStopping(m *Machine, c ControlRequest) {
	m.emit(Reply{ID: c.ID, Error: "cannot " + c.Command.String() + ": mworker is stopping"})
}
