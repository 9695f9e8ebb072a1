package proptest

import (
	"slices"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

// Regressions: the shrunk cases rapid found, kept as plain tests so that
// they stay readable when the generators change.

func baseConfig(workers int) fsm.Config {
	return fsm.Config{
		Workers: workers, Path: "/usr/local/bin/mworker", Argv: []string{"mworker", "run", "--", "srv"},
		ReadyTimeout: 30 * time.Second, StopSignal: fsm.SIGTERM, StopTimeout: 10 * time.Second,
	}
}

func mustNew(t *testing.T, cfg fsm.Config) *fsm.Machine {
	t.Helper()
	m, err := fsm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func only[A fsm.Action](acts []fsm.Action) []A {
	var out []A
	for _, a := range acts {
		if v, ok := a.(A); ok {
			out = append(out, v)
		}
	}
	return out
}

// A number that is no signal (0, negative, above 64) was forwarded to the
// workers as Kill{Signal: 0}: kill(2) would probe them, or fail.
func TestRegressionNoSignalNumberIsNotForwarded(t *testing.T) {
	for _, sig := range []fsm.Signal{0, -1, 65, 99} {
		m := mustNew(t, baseConfig(1))
		m.Step(fsm.Start{})
		m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
		if kills := only[fsm.Kill](m.Step(fsm.SignalReceived{Signal: sig})); len(kills) > 0 {
			t.Errorf("signal %d: %v, want it ignored", int(sig), kills)
		}
	}
	// A real-time signal is still forwarded.
	m := mustNew(t, baseConfig(1))
	m.Step(fsm.Start{})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
	if kills := only[fsm.Kill](m.Step(fsm.SignalReceived{Signal: 40})); len(kills) != 1 || kills[0].Signal != 40 {
		t.Errorf("signal 40: %v, want it forwarded", kills)
	}
}

// The status of the last current worker reaped was lost across the exec:
// a worker exits 1 (restart pending), a reload execs, SIGTERM arrives
// before the new generation is up, and the master exited 0 instead of 1.
func TestRegressionExitStatusSurvivesExec(t *testing.T) {
	cfg := baseConfig(1)
	m := mustNew(t, cfg)
	m.Step(fsm.Start{})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
	m.Step(fsm.ChildExited{Pid: 1001, Status: fsm.ExitStatus{Code: 1}})
	execs := only[fsm.Exec](m.Step(fsm.SignalReceived{Signal: fsm.SIGUSR2}))
	if len(execs) != 1 {
		t.Fatalf("reload: want one Exec, got %v", execs)
	}
	cfg.Argv, cfg.Resume = execs[0].Argv, &execs[0].Handover
	n := mustNew(t, cfg)
	n.Step(fsm.Start{})
	n.Step(fsm.SignalReceived{Signal: fsm.SIGTERM})
	n.Step(fsm.WorkerStarted{Generation: 2, Slot: 0, Pid: 1002})
	exits := only[fsm.Exit](n.Step(fsm.ChildExited{Pid: 1002, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}}))
	if len(exits) != 1 || exits[0].Status != 1 {
		t.Fatalf("exit %v, want status 1 of the last current worker reaped", exits)
	}
}

// A handover naming two live workers for one (generation, slot) left the
// first one known by pid but in no slot: it could never be listed, killed
// or forgotten, and a NoChildren then recursed until the stack overflowed.
// The duplicate is not adopted.
func TestRegressionHandoverDuplicateSlot(t *testing.T) {
	cfg := baseConfig(1)
	cfg.Resume = &fsm.Handover{Generation: 1, MaxGeneration: 1, Workers: []fsm.HandoverWorker{
		{Pid: 1001, Generation: 1, Slot: 0, Ready: true},
		{Pid: 1002, Generation: 1, Slot: 0, Ready: true},
	}}
	m := mustNew(t, cfg)
	m.Step(fsm.Start{})
	var status *fsm.Status
	for _, r := range only[fsm.Reply](m.Step(fsm.ControlRequest{ID: 1, Command: fsm.CmdStatus})) {
		status = r.Status
	}
	if status == nil || len(status.Workers) != 1 || status.Workers[0].Pid != 1001 {
		t.Fatalf("status %v, want only pid 1001 adopted", status)
	}
	kills := only[fsm.Kill](m.Step(fsm.SignalReceived{Signal: fsm.SIGTERM}))
	if len(kills) != 1 || len(kills[0].Pids) != 1 || kills[0].Pids[0] != 1001 {
		t.Fatalf("terminate: %v, want kill of 1001 only", kills)
	}
	m.Step(fsm.SpawnFailed{Generation: 2, Slot: 0, Status: fsm.ExitStatus{Code: 127}})
	exits := only[fsm.Exit](m.Step(fsm.NoChildren{}))
	if len(exits) != 1 {
		t.Fatalf("NoChildren while stopping: %v, want Exit", exits)
	}
}

// ECHILD with known workers steps their lost exits one by one. The first
// exit's consequences signalled the others, already dead (their process
// groups may be reused), and a queued reload exec'd with them in -sf.
func TestRegressionNoChildrenNeitherSignalsNorListsTheDead(t *testing.T) {
	cfg := baseConfig(2)
	cfg.Restart = fsm.RestartNo
	m := mustNew(t, cfg)
	m.Step(fsm.Start{})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 1, Pid: 1002})
	acts := m.Step(fsm.NoChildren{})
	if kills := only[fsm.Kill](acts); len(kills) > 0 {
		t.Errorf("restart=no, NoChildren: %v, want no signal to reaped workers", kills)
	}
	if exits := only[fsm.Exit](acts); len(exits) != 1 || exits[0].Status != 255 {
		t.Errorf("restart=no, NoChildren: exit %v, want status 255", exits)
	}

	// Resumed image, reload queued while the new generation starts.
	cfg = baseConfig(2)
	cfg.Ready = fsm.ReadyMode{Kind: fsm.ReadyNotify}
	cfg.Resume = &fsm.Handover{Generation: 1, MaxGeneration: 1, Workers: []fsm.HandoverWorker{
		{Pid: 1001, Generation: 1, Slot: 0, Ready: true}, {Pid: 1002, Generation: 1, Slot: 1, Ready: true}}}
	m = mustNew(t, cfg)
	m.Step(fsm.Start{})
	m.Step(fsm.WorkerStarted{Generation: 2, Slot: 0, Pid: 1003})
	m.Step(fsm.WorkerStarted{Generation: 2, Slot: 1, Pid: 1004})
	m.Step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	acts = m.Step(fsm.NoChildren{})
	if kills := only[fsm.Kill](acts); len(kills) > 0 {
		t.Errorf("NoChildren during a reload: %v, want no signal to reaped workers", kills)
	}
	execs := only[fsm.Exec](acts)
	if len(execs) != 1 {
		t.Errorf("NoChildren then queued reload: %d execs, want the queued reload to run", len(execs))
	}
	for _, e := range execs {
		if len(e.Handover.Workers) > 0 || slices.Contains(e.Argv, "-sf") {
			t.Errorf("NoChildren then queued reload: exec %v with workers %v, want none listed", e.Argv, e.Handover.Workers)
		}
	}
}

// A handover timer restarting a slot this machine does not have (negative,
// or beyond --workers) was armed, and firing it indexed out of range.
func TestRegressionHandoverRestartOfNoSlot(t *testing.T) {
	for _, slot := range []int{-1, 1, 7} {
		cfg := baseConfig(1)
		bad := fsm.Timer{Kind: fsm.TimerRestart, Generation: 1, Slot: slot}
		cfg.Resume = &fsm.Handover{Generation: 1, MaxGeneration: 1, Timers: []fsm.Timer{bad}}
		m := mustNew(t, cfg)
		m.Step(fsm.Start{})
		var acts []fsm.Action
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("slot %d: Step panicked: %v", slot, p)
				}
			}()
			acts = m.Step(fsm.TimerFired{Timer: bad})
		}()
		if spawns := only[fsm.Spawn](acts); len(spawns) > 0 {
			t.Errorf("slot %d: %v, want no spawn for a slot out of 0..Workers-1", slot, spawns)
		}
	}
}

// An ExecFailed fed before Start was held, and when the held events were
// replayed after Start it passed for the outcome of an Exec a held reload
// had just emitted: Exec was no longer the last action of its step.
func TestRegressionExecFailedBeforeStartIsNoOutcome(t *testing.T) {
	m := mustNew(t, baseConfig(1))
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
	m.Step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	m.Step(fsm.ExecFailed{Err: "early"})
	acts := m.Step(fsm.Start{})
	for i, a := range acts {
		if _, ok := a.(fsm.Exec); ok && i != len(acts)-1 {
			t.Fatalf("Exec followed by %v in the same step", acts[i+1:])
		}
	}
}

// Under --restart on-failure, a slot whose worker exited 0 stays empty; a
// scale down that removed the only slot still serving left the master with
// nothing to serve and nothing that would ever end the run.
func TestRegressionScaleDownToCleanlyExitedSlotsEndsTheRun(t *testing.T) {
	cfg := baseConfig(2)
	cfg.Restart = fsm.RestartOnFailure
	m := mustNew(t, cfg)
	m.Step(fsm.Start{})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
	m.Step(fsm.WorkerStarted{Generation: 1, Slot: 1, Pid: 1002})
	m.Step(fsm.ChildExited{Pid: 1001, Status: fsm.ExitStatus{Code: 0}})
	acts := m.Step(fsm.ControlRequest{ID: 2, Command: fsm.CmdScale, Arg: "1"})
	if m.State() != "exiting" {
		t.Fatalf("state %s after the scale down, want exiting: %v", m.State(), acts)
	}
	m.Step(fsm.ChildExited{Pid: 1002, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}})
	if m.State() != "exited" {
		t.Fatalf("state %s once every worker is gone, want exited", m.State())
	}
}

// Under --restart on-failure, a scale up whose spawn was still under way
// when a scale down removed its slot, and the only other worker exited 0:
// the removed slot's spawn failed (or its worker started and left), and
// the master kept running with nothing to serve and nothing to start
// (found by TestMachine, seed 1371729013760229003).
func TestRegressionScaledAwaySpawnAfterCleanExitEndsTheRun(t *testing.T) {
	for _, started := range []bool{false, true} {
		cfg := baseConfig(1)
		cfg.Restart = fsm.RestartOnFailure
		m := mustNew(t, cfg)
		m.Step(fsm.Start{})
		m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
		m.Step(fsm.ControlRequest{ID: 3, Command: fsm.CmdScale, Arg: "2"})
		m.Step(fsm.ControlRequest{ID: 4, Command: fsm.CmdScale, Arg: "1"})
		var acts []fsm.Action
		acts = append(acts, m.Step(fsm.ChildExited{Pid: 1001, Status: fsm.ExitStatus{Code: 0}})...)
		if started {
			acts = append(acts, m.Step(fsm.WorkerStarted{Generation: 1, Slot: 1, Pid: 1002})...)
			acts = append(acts, m.Step(fsm.ChildExited{Pid: 1002, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}})...)
		} else {
			acts = append(acts, m.Step(fsm.SpawnFailed{Generation: 1, Slot: 1, Status: fsm.ExitStatus{Code: 1}, Err: "cannot start"})...)
		}
		if m.State() != "exited" {
			t.Fatalf("started=%v: state %s with no worker left under --restart on-failure, want exited", started, m.State())
		}
		if ex := only[fsm.Exit](acts); len(ex) != 1 || ex[0].Status != 0 {
			t.Errorf("started=%v: exits %v, want one with status 0 (every serving worker exited 0)", started, ex)
		}
	}
}

// After a stop the master's status was the last current worker's reaped:
// a worker that crashed on SIGTERM (exit 1) and was reaped before another
// that drained (exit 0) left the master exiting 0, and the other order
// gave 1. Now the first failure since the stop began, in either order; a
// --success-exit status is no failure and does not hide a later one.
func TestRegressionStopStatusIsTheFirstFailure(t *testing.T) {
	for _, c := range []struct {
		name    string
		success []int
		a, b    fsm.ExitStatus
		want    int
	}{
		{"crash then drain", nil, fsm.ExitStatus{Code: 1}, fsm.ExitStatus{Code: 0}, 1},
		{"drain then crash", nil, fsm.ExitStatus{Code: 0}, fsm.ExitStatus{Code: 1}, 1},
		{"both drain", nil, fsm.ExitStatus{Code: 0}, fsm.ExitStatus{Code: 0}, 0},
		{"killed then crash", nil, fsm.ExitStatus{Signal: fsm.SIGKILL}, fsm.ExitStatus{Code: 1}, 137},
		{"success-exit then crash", []int{143}, fsm.ExitStatus{Signal: fsm.SIGTERM}, fsm.ExitStatus{Code: 1}, 1},
		{"success-exit then drain", []int{143}, fsm.ExitStatus{Signal: fsm.SIGTERM}, fsm.ExitStatus{Code: 0}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig(2)
			cfg.SuccessExit = c.success
			m := mustNew(t, cfg)
			m.Step(fsm.Start{})
			m.Step(fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 1001})
			m.Step(fsm.WorkerStarted{Generation: 1, Slot: 1, Pid: 1002})
			m.Step(fsm.SignalReceived{Signal: fsm.SIGTERM})
			m.Step(fsm.ChildExited{Pid: 1001, Status: c.a})
			exits := only[fsm.Exit](m.Step(fsm.ChildExited{Pid: 1002, Status: c.b}))
			if len(exits) != 1 || exits[0].Status != c.want {
				t.Fatalf("worker statuses %v then %v: exit %v, want status %d", c.a, c.b, exits, c.want)
			}
		})
	}
}
