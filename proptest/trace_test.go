package proptest

import (
	"github.com/mworker/mworker/fsm"
)

type traceStep struct {
	ev    fsm.Event
	acts  []fsm.Action
	fresh bool // the first step of a new Machine
}

// trace is every step of the run, across execs, and what the "" check has
// learnt from the part it has read: the invariants over the accumulated
// trace, judged from the trace alone, without the model.
type trace struct {
	steps     []traceStep
	read      int
	exited    bool
	execHeld  bool                   // an Exec was emitted and no ExecFailed followed yet
	held      []fsm.Event            // events fed since that Exec
	requested map[fsm.RequestID]bool // control requests fed
	answered  map[fsm.RequestID]bool
	pidGen    map[int]int // live pid -> generation, from status replies and handovers
}

func (tr *trace) scan(h *harness) {
	if tr.requested == nil {
		tr.requested, tr.answered, tr.pidGen = map[fsm.RequestID]bool{}, map[fsm.RequestID]bool{}, map[int]int{}
	}
	for ; tr.read < len(tr.steps); tr.read++ {
		s := tr.steps[tr.read]
		failed := false
		if s.fresh {
			tr.execHeld = false // a fresh machine after a successful exec
			tr.held = nil
		}
		switch e := s.ev.(type) {
		case fsm.ExecFailed:
			tr.execHeld, failed = false, true
		case fsm.ControlRequest:
			if tr.requested[e.ID] {
				h.fatalf("harness: request id %d reused", e.ID)
			}
			tr.requested[e.ID] = true
		}
		if tr.execHeld && !failed {
			tr.held = append(tr.held, s.ev)
		}
		tr.reaped(s.ev)
		if len(s.acts) > 0 && (tr.exited || tr.execHeld) {
			h.fatalf("invariants 1, 5: %v yields %v after Exit or Exec", s.ev, s.acts)
		}
		for i, a := range s.acts {
			switch a := a.(type) {
			case fsm.Exit:
				if tr.exited || i != len(s.acts)-1 {
					h.fatalf("invariant 1: Exit not once and last: %v", s.acts)
				}
				tr.exited = true
				for id := range tr.requested {
					if !tr.answered[id] {
						h.fatalf("invariant 3: Exit leaves request %d unanswered", id)
					}
				}
			case fsm.Exec:
				if i != len(s.acts)-1 {
					h.fatalf("invariant 5: actions after Exec: %v", s.acts)
				}
				tr.execHeld = true
				held := map[fsm.RequestID]bool{}
				for _, id := range a.Handover.Requests {
					held[id] = true
				}
				for id := range tr.requested {
					if !tr.answered[id] && !held[id] {
						h.fatalf("invariant 3: Exec drops request %d: neither answered nor handed over", id)
					}
				}
				once := map[int]bool{}
				for _, w := range a.Handover.Workers {
					tr.sameGeneration(h, w.Pid, w.Generation, once)
				}
			case fsm.Reply:
				if !tr.requested[a.ID] || tr.answered[a.ID] {
					h.fatalf("invariant 3: reply %d answers no request or answers it twice", a.ID)
				}
				tr.answered[a.ID] = true
				if a.Status != nil {
					once := map[int]bool{}
					for _, w := range a.Status.Workers {
						tr.sameGeneration(h, w.Pid, w.Generation, once)
					}
				}
			case fsm.Kill:
				for _, p := range a.Pids {
					if p <= 0 {
						h.fatalf("invariant 2: %v", a)
					}
				}
			}
		}
		if failed {
			// The held events were replayed somewhere in this step.
			for _, e := range tr.held {
				tr.reaped(e)
			}
			if !tr.execHeld {
				tr.held = nil
			}
		}
	}
}

// reaped forgets the pids an event reports dead: a pid may be reused.
func (tr *trace) reaped(ev fsm.Event) {
	switch e := ev.(type) {
	case fsm.ChildExited:
		delete(tr.pidGen, e.Pid)
	case fsm.NoChildren:
		clear(tr.pidGen)
	}
}

// sameGeneration checks invariant 4: a live pid is listed once and stays
// in the generation it was first seen in.
func (tr *trace) sameGeneration(h *harness, pid, gen int, once map[int]bool) {
	if once[pid] {
		h.fatalf("invariant 4: pid %d listed twice", pid)
	}
	once[pid] = true
	if g, ok := tr.pidGen[pid]; ok && g != gen {
		h.fatalf("invariant 4: pid %d in generations %d and %d", pid, g, gen)
	}
	tr.pidGen[pid] = gen
}
