package proptest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"pgregory.net/rapid"
)

// TestStepNeverPanics feeds arbitrary events, sense and nonsense, to
// machines in any state, including machines resumed from a garbled
// Handover. Step must not panic; the structural invariants hold even
// then: Kill only pids that were reported as workers, Exit once and last,
// nothing after Exit, nothing but ExecFailed after Exec, same actions on
// replay.
func TestStepNeverPanics(t *testing.T) {
	rapid.Check(t, stepNeverPanics)
}

func drawHandover(t *rapid.T) *fsm.Handover {
	small := rapid.IntRange(-2, 12)
	h := &fsm.Handover{
		Generation:    small.Draw(t, "hGen"),
		MaxGeneration: small.Draw(t, "hMax"),
		Reloads:       small.Draw(t, "hReloads"),
		Announced:     rapid.Bool().Draw(t, "hAnnounced"),
		ExitStatus:    rapid.IntRange(0, 255).Draw(t, "hStatus"),
		Requests:      rapid.SliceOfN(rapid.Custom(func(t *rapid.T) fsm.RequestID { return fsm.RequestID(rapid.Uint64Range(0, 5).Draw(t, "id")) }), 0, 3).Draw(t, "hRequests"),
		Failures:      rapid.SliceOfN(rapid.IntRange(-1, 70), 0, 10).Draw(t, "hFailures"),
		StopPids:      rapid.SliceOfN(rapid.IntRange(-1, 3000), 0, 3).Draw(t, "hStop"),
		TermPids:      rapid.SliceOfN(rapid.IntRange(-1, 3000), 0, 3).Draw(t, "hTerm"),
	}
	h.Workers = rapid.SliceOfN(rapid.Custom(func(t *rapid.T) fsm.HandoverWorker {
		return fsm.HandoverWorker{
			Pid: rapid.IntRange(-1, 3000).Draw(t, "pid"), Generation: small.Draw(t, "gen"),
			Slot: rapid.IntRange(-1, 2000).Draw(t, "slot"), Ready: rapid.Bool().Draw(t, "ready"), Stopping: rapid.Bool().Draw(t, "stopping"),
			Leaving: rapid.IntRange(0, 5).Draw(t, "leaving") == 0, Replacing: rapid.IntRange(0, 3).Draw(t, "replacing") == 0,
		}
	}), 0, 10).Draw(t, "hWorkers")
	h.Timers = rapid.SliceOfN(rapid.Custom(drawAnyTimer), 0, 6).Draw(t, "hTimers")
	return h
}

func drawAnyTimer(t *rapid.T) fsm.Timer {
	return fsm.Timer{
		Kind:       fsm.TimerKind(rapid.IntRange(-1, int(fsm.TimerWatchdog)+1).Draw(t, "kind")),
		Generation: rapid.IntRange(-1, 12).Draw(t, "gen"),
		Slot:       rapid.IntRange(-1, 9).Draw(t, "slot"),
		Pid:        rapid.IntRange(-1, 3000).Draw(t, "pid"),
	}
}

func drawAnyEvent(t *rapid.T, seen []fsm.Timer) fsm.Event {
	pid := rapid.OneOf(rapid.IntRange(-2, 20), rapid.IntRange(990, 1030), rapid.IntRange(2990, 3000))
	gen, slot := rapid.IntRange(-1, 12), rapid.IntRange(-1, 10)
	switch rapid.IntRange(0, 11).Draw(t, "kind") {
	case 0:
		return fsm.Start{}
	case 1:
		return fsm.SignalReceived{Signal: fsm.Signal(rapid.IntRange(-2, 70).Draw(t, "sig"))}
	case 2:
		return fsm.WorkerStarted{Generation: gen.Draw(t, "gen"), Slot: slot.Draw(t, "slot"), Pid: pid.Draw(t, "pid")}
	case 3:
		return fsm.SpawnFailed{Generation: gen.Draw(t, "gen"), Slot: slot.Draw(t, "slot"), Status: fsm.ExitStatus{Code: rapid.IntRange(-1, 300).Draw(t, "code")}}
	case 4:
		return fsm.WorkerReady{Pid: pid.Draw(t, "pid")}
	case 5:
		return fsm.ChildExited{Pid: pid.Draw(t, "pid"), Status: fsm.ExitStatus{Code: rapid.IntRange(-1, 300).Draw(t, "code"), Signal: fsm.Signal(rapid.IntRange(-1, 70).Draw(t, "sig"))}}
	case 6:
		return fsm.NoChildren{}
	case 7:
		return fsm.ExecFailed{Err: "e"}
	case 9:
		return fsm.ImageChanged{Changed: rapid.Bool().Draw(t, "changed")}
	case 10:
		return fsm.WorkerWatchdog{Pid: pid.Draw(t, "pid"), Trigger: rapid.Bool().Draw(t, "trigger")}
	case 8:
		if len(seen) > 0 && rapid.Bool().Draw(t, "seenTimer") {
			return fsm.TimerFired{Timer: rapid.SampledFrom(seen).Draw(t, "timer")}
		}
		return fsm.TimerFired{Timer: drawAnyTimer(t)}
	}
	return fsm.ControlRequest{ID: fsm.RequestID(rapid.Uint64Range(0, 8).Draw(t, "id")), Command: fsm.Command(rapid.IntRange(-1, 5).Draw(t, "cmd"))}
}

func stepNeverPanics(t *rapid.T) {
	cfg := fsm.Config{
		Workers: rapid.IntRange(1, 8).Draw(t, "workers"), Path: "/m", Argv: []string{"m", "-sf", "1", "--", "w"},
		Ready:        fsm.ReadyMode{Kind: fsm.ReadyKind(rapid.IntRange(0, 2).Draw(t, "ready")), After: time.Second},
		ReadyTimeout: time.Second, StopTimeout: time.Second,
		StopSignal: fsm.Signal(rapid.IntRange(1, 64).Draw(t, "stopSignal")),
		Restart:    fsm.RestartPolicy(rapid.IntRange(0, 2).Draw(t, "restart")),
		Reexec:     fsm.ReexecPolicy(rapid.IntRange(0, 2).Draw(t, "reexec")),
		StopPids:   rapid.SliceOfN(rapid.IntRange(1, 3000), 0, 3).Draw(t, "stopPids"),
		Watchdog:   time.Duration(rapid.IntRange(0, 2).Draw(t, "watchdog")) * time.Second,
	}
	workers := map[int]bool{}
	if rapid.Bool().Draw(t, "resume") {
		cfg.Resume = drawHandover(t)
		for _, w := range cfg.Resume.Workers {
			workers[w.Pid] = true
		}
	}
	m, err := fsm.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	var (
		events []fsm.Event
		steps  [][]fsm.Action
		timers []fsm.Timer // timers the machine set: fire them too
	)
	exited, execPending := false, false
	for i := range rapid.IntRange(0, 200).Draw(t, "events") {
		ev := drawAnyEvent(t, timers)
		events = append(events, ev)
		if s, ok := ev.(fsm.WorkerStarted); ok {
			workers[s.Pid] = true
		}
		acts := step(t, m, ev)
		steps = append(steps, acts)
		if exited && len(acts) > 0 {
			t.Fatalf("step %d (%v) after Exit: %v", i, ev, acts)
		}
		if _, ok := ev.(fsm.ExecFailed); !ok && execPending && len(acts) > 0 {
			t.Fatalf("step %d (%v) after Exec: %v", i, ev, acts)
		}
		if _, ok := ev.(fsm.ExecFailed); ok {
			execPending = false
		}
		for j, a := range acts {
			switch a := a.(type) {
			case fsm.Kill:
				for _, p := range a.Pids {
					if p <= 0 || !workers[p] {
						t.Fatalf("step %d (%v): %v targets %d, never a worker", i, ev, a, p)
					}
				}
			case fsm.Exit:
				if exited || j != len(acts)-1 {
					t.Fatalf("step %d (%v): Exit not once and last: %v", i, ev, acts)
				}
				exited = true
			case fsm.SetTimer:
				timers = append(timers, a.Timer)
			case fsm.Exec:
				if j != len(acts)-1 {
					t.Fatalf("step %d (%v): actions after Exec: %v", i, ev, acts)
				}
				execPending = true
			}
		}
	}
	r, _ := fsm.New(cfg)
	for i, ev := range events {
		if got := step(t, r, ev); !reflect.DeepEqual(got, steps[i]) {
			t.Fatalf("replay of step %d (%v): %v, first run %v", i, ev, got, steps[i])
		}
	}
}

// step calls Step and turns a panic into a failure that names the event.
func step(t *rapid.T, m *fsm.Machine, ev fsm.Event) (acts []fsm.Action) {
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("Step(%v) panicked: %v", ev, fmt.Sprint(p))
		}
	}()
	return m.Step(ev)
}
