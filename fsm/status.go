package fsm

import (
	"strings"
	"time"
)

// What Status says about reloads and slots beyond the workers: the last
// reload's outcome and trigger, a queued reload, restarts and backoff per
// slot. The caller adds what needs a clock (when, how long).

// triggerOf names what asks for the reload being begun or queued by the
// event being stepped: a signal, a control client, or, for a reload that
// was queued, whatever asked for it first.
func (m *Machine) triggerOf() string {
	if !m.derived {
		switch e := m.ev.(type) {
		case SignalReceived:
			if n := e.Signal.String(); !strings.HasPrefix(n, "SIG") {
				return "SIG" + n
			} else {
				return n
			}
		case ControlRequest:
			return e.requester()
		}
	}
	if m.queuedTrigger != "" {
		return m.queuedTrigger
	}
	return "queued reload"
}

// endReload records how the reload under way ended and returns it.
func (m *Machine) endReload(result, reason string, gen, prev int, pids, old []int) *ReloadOutcome {
	m.last = &ReloadOutcome{Seq: m.begun, Result: result, Reason: reason, Trigger: m.trigger,
		Generation: gen, Previous: prev, Pids: pids, Old: old}
	m.trigger = ""
	return m.last
}

func (m *Machine) addReloadStatus(s *Status) {
	s.LastReload = m.last.clone()
	if m.state == stateExecPending || m.state == stateAwaitingReady {
		s.ReloadTrigger = m.trigger
	}
	s.ReloadQueued = m.pendingReload || len(m.queued) > 0
	s.Slots = make([]SlotStatus, m.size)
	for i := range s.Slots {
		st := SlotStatus{Slot: i, RestartPending: m.restarting[i]}
		if i < len(m.restarts) {
			st.Restarts = m.restarts[i]
		}
		if i < len(m.failures) {
			st.Failures = m.failures[i]
		}
		if i < len(m.backoffs) {
			st.Backoff = m.backoffs[i]
		}
		s.Slots[i] = st
	}
}

// noteRestart counts a restart of slot after delay.
func (m *Machine) noteRestart(slot int, delay time.Duration) {
	for slot >= len(m.restarts) {
		m.restarts = append(m.restarts, 0)
	}
	for slot >= len(m.backoffs) {
		m.backoffs = append(m.backoffs, 0)
	}
	m.restarts[slot]++
	m.backoffs[slot] = delay
}

// clearBackoff forgets the backoff of slot, as its failures are.
func (m *Machine) clearBackoff(slot int) {
	if slot < len(m.backoffs) {
		m.backoffs[slot] = 0
	}
}
