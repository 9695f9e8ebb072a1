package fsm

import (
	"context"
	"reflect"
)

// The table's internal transitions call their callbacks through on and do:
// a callback takes the machine and, if it needs one, its event typed
// (func(*Machine, ChildExited)), so that it reads no field of an event it
// did not get. Should a new path route an event of another type to a
// trigger (a table change, a classify change), the step logs an error
// and does nothing instead of panicking on a type assertion;
// TestCallbackOfAnotherEventDoesNotPanic holds that.

// on adapts a callback of events of type E.
func on[E Event](f func(m *Machine, e E)) func(context.Context, ...any) error {
	return func(ctx context.Context, _ ...any) error {
		m := machineOf(ctx)
		e, ok := m.ev.(E)
		if !ok {
			m.log(LevelError, "fsm: a transition got an event it does not take; ignoring it (a bug in the table)",
				"takes", reflect.TypeFor[E]().Name(), "event", m.ev.String(), "state", m.state.String())
			return nil
		}
		f(m, e)
		return nil
	}
}

// do adapts a callback that needs no event (it reads the machine's data,
// or tells the events it serves apart itself).
func do(f func(m *Machine)) func(context.Context, ...any) error {
	return func(ctx context.Context, _ ...any) error {
		f(machineOf(ctx))
		return nil
	}
}

// event returns the event being stepped as E, for the entry actions (which
// stay plain functions, so that the graph names them); like on, it logs
// instead of panicking when the event is of another type.
func event[E Event](m *Machine) (E, bool) {
	e, ok := m.ev.(E)
	if !ok {
		m.log(LevelError, "fsm: an entry action got an event it does not take (a bug in the table)",
			"takes", reflect.TypeFor[E]().Name(), "event", m.ev.String(), "state", m.state.String())
	}
	return e, ok
}
