package fsm

import (
	"context"

	"github.com/qmuntal/stateless"
)

// The shutdown delay (Config.ShutdownDelay, --shutdown-delay): a stop
// first keeps serving for the delay, then is carried out as it would have
// been at once. Kubernetes removes a pod from its endpoints only some time
// after it sends SIGTERM (KEP-3960, the "preStop: sleep" habit): the delay
// keeps answering the connections that still arrive meanwhile.
//
// During the delay the machine stays Running (or AwaitingReady, a reload
// under way goes on), with TimerShutdownDelay armed and Status.ShutdownDelay
// set: workers are supervised and restarted as usual, listeners stay open,
// a reload request is refused ("mworker is stopping") and a queued one
// waits, to be answered as aborted when the stop is carried out. A second
// stop (any of SIGTERM, SIGINT, SIGUSR1, a stop request) cuts the delay
// short: it is carried out at once, as itself. A worker's exit that ends
// the run (--restart no, --restart-limit) ends the delay too.

// delayed turns the first stop into the start of the shutdown delay; a
// stop during the delay, or any stop without one, stays what it is.
func (m *Machine) delayed(t stateless.Trigger) stateless.Trigger {
	if m.cfg.ShutdownDelay > 0 && !m.delaying && (t == trigSoftStop || t == trigTerminate) {
		return trigDelayStop
	}
	return t
}

// unlessDelaying refuses a reload during the shutdown delay.
func (m *Machine) unlessDelaying(t stateless.Trigger) stateless.Trigger {
	if m.delaying {
		return trigReloadRefused
	}
	return t
}

func beginShutdownDelay(m *Machine) {
	m.delaying, m.heldStop, m.heldSignal = true, trigSoftStop, m.cfg.StopSignal
	what := "soft stop"
	if e, ok := m.ev.(SignalReceived); ok && RouteOf(e.acted()) == RouteTerminate {
		m.heldStop, m.heldSignal, what = trigTerminate, e.acted(), e.acted().String()
	}
	m.log(LevelInfo, "stopping after the shutdown delay: serving on until then; a second stop cuts it short",
		"stop", what, "signal", m.heldSignal, "delay", m.cfg.ShutdownDelay)
	m.emit(Notify{State: NotifyStopping})
	m.setTimer(Timer{Kind: TimerShutdownDelay}, m.cfg.ShutdownDelay)
	if id, ok := m.controlID(); ok {
		// "stop" is answered once the stop has begun: it has.
		m.emit(Reply{ID: id, OK: true})
	}
}

func endShutdownDelay(ctx context.Context, _ ...any) error {
	m := machineOf(ctx)
	m.log(LevelInfo, "shutdown delay over", "delay", m.cfg.ShutdownDelay)
	if m.heldStop == trigTerminate {
		m.terminate(m.heldSignal)
	} else {
		m.softStop()
	}
	return nil
}

// endDelay ends the shutdown delay, if one runs, as a stop is carried
// out; it reports whether one ran.
func (m *Machine) endDelay() bool {
	if !m.delaying {
		return false
	}
	m.delaying = false
	if tf, ok := m.ev.(TimerFired); !ok || m.derived || tf.Timer.Kind != TimerShutdownDelay {
		m.cancelTimer(Timer{Kind: TimerShutdownDelay})
		m.log(LevelInfo, "shutdown delay cut short", "delay", m.cfg.ShutdownDelay)
	}
	return true
}
