package fsm

import (
	"slices"
	"testing"
	"time"
)

// statusDriver plays the OS for a machine: spawns succeed with pids
// 101, 102, ... for generation 1, 201, ... for generation 2, and so on.
type statusDriver struct {
	t       *testing.T
	m       *Machine
	replies []Reply
	execs   []Exec
	logs    []Log
}

func newStatusDriver(t *testing.T, cfg Config) *statusDriver {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path, cfg.Argv = "/usr/bin/mworker", []string{"mworker", "run", "--", "server"}
	}
	cfg.ReadyTimeout, cfg.StopSignal, cfg.StopTimeout = 30*time.Second, SIGTERM, 10*time.Second
	if cfg.Backoff == (Backoff{}) {
		cfg.Backoff = DefaultBackoff
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &statusDriver{t: t, m: m}
}

func (d *statusDriver) step(ev Event) {
	var outcomes []Event
	for _, a := range d.m.Step(ev) {
		switch a := a.(type) {
		case Spawn:
			outcomes = append(outcomes, WorkerStarted{Generation: a.Generation, Slot: a.Slot, Pid: a.Generation*100 + a.Slot + 1})
		case Reply:
			d.replies = append(d.replies, a)
		case Exec:
			d.execs = append(d.execs, a)
		case Log:
			d.logs = append(d.logs, a)
		}
	}
	for _, o := range outcomes {
		d.step(o)
	}
}

func (d *statusDriver) lastReply() Reply {
	d.t.Helper()
	if len(d.replies) == 0 {
		d.t.Fatal("no reply")
	}
	return d.replies[len(d.replies)-1]
}

// The last reload's outcome, trigger, pids and the queued flag, as status
// and the reload's own reply say them, after a success, a rollback and an
// abort; and the slots' restarts and backoff after a crash.
func TestStatusReportsReloadsAndSlots(t *testing.T) {
	d := newStatusDriver(t, Config{Workers: 2, Ready: ReadyMode{Kind: ReadyNotify}, Reexec: ReexecNever})
	d.step(Start{})
	d.step(WorkerReady{Pid: 101})
	d.step(WorkerReady{Pid: 102})
	if s := d.m.Status(); s.LastReload != nil || s.ReloadQueued || s.ReloadTrigger != "" || len(s.Slots) != 2 {
		t.Fatalf("fresh status: %+v", s)
	}

	// A reload by a control client, and one by SIGHUP queued behind it.
	d.step(ControlRequest{ID: 1, Command: CmdReload, From: "control client pid 4242"})
	if s := d.m.Status(); s.ReloadTrigger != "control client pid 4242" || s.ReloadQueued {
		t.Fatalf("during the reload: trigger %q queued %v", s.ReloadTrigger, s.ReloadQueued)
	}
	d.step(SignalReceived{Signal: SIGHUP})
	if s := d.m.Status(); !s.ReloadQueued {
		t.Fatal("a reload signalled during a reload is not reported queued")
	}
	d.step(WorkerReady{Pid: 201})
	d.step(WorkerReady{Pid: 202})
	r := d.lastReply()
	want := ReloadOutcome{Seq: 1, Result: ReloadSuccess, Trigger: "control client pid 4242", Generation: 2, Previous: 1, Pids: []int{201, 202}, Old: []int{101, 102}}
	if r.ID != 1 || !r.OK || r.Reload == nil || !equalOutcome(*r.Reload, want) {
		t.Fatalf("reply to the reload: %v, want %v", r, &want)
	}
	s := d.m.Status()
	if s.LastReload == nil || !equalOutcome(*s.LastReload, want) {
		t.Fatalf("status after the reload: last %v, want %v", s.LastReload, &want)
	}
	// The queued one started at once, named by its signal.
	if s.ReloadQueued || s.ReloadTrigger != "SIGHUP" || s.State != "reloading" {
		t.Fatalf("the queued reload: state %s trigger %q queued %v", s.State, s.ReloadTrigger, s.ReloadQueued)
	}
	if !slices.ContainsFunc(d.logs, func(l Log) bool {
		return l.Msg == "reloading: starting the new generation" && slices.Contains(l.Attrs, any("SIGHUP"))
	}) {
		t.Error(`no "reloading" log line names SIGHUP`)
	}

	// Generation 3 fails: rolled back.
	d.step(ChildExited{Pid: 301, Status: ExitStatus{Code: 3}})
	s = d.m.Status()
	o := s.LastReload
	if o == nil || o.Seq != 2 || o.Result != ReloadFailure || o.Trigger != "SIGHUP" || o.Generation != 3 || o.Previous != 2 ||
		o.Reason != "worker 301 (slot 0 of generation 3) exited with exit:3 before the generation was ready" {
		t.Fatalf("after the rollback: last %+v", o)
	}
	if s.ReloadTrigger != "" {
		t.Errorf("no reload under way, but trigger %q", s.ReloadTrigger)
	}
	// Its other worker's exit is named as the rolled-back generation's.
	d.logs = nil
	d.step(ChildExited{Pid: 302, Status: ExitStatus{Signal: SIGTERM}})
	if len(d.logs) == 0 || d.logs[0].Msg != "worker of a rolled-back generation exited" {
		t.Errorf("exit of a rolled-back worker logged as %v", d.logs)
	}

	// A crash of a serving worker: one restart, its backoff, pending.
	d.step(ChildExited{Pid: 202, Status: ExitStatus{Code: 1}})
	sl := d.m.Status().Slots
	if sl[1].Restarts != 1 || sl[1].Failures != 1 || sl[1].Backoff != DefaultBackoff.Min || !sl[1].RestartPending || sl[0] != (SlotStatus{Slot: 0}) {
		t.Fatalf("slots after a crash: %+v", sl)
	}
	d.step(TimerFired{Timer: Timer{Kind: TimerRestart, Generation: 2, Slot: 1}})
	if sl := d.m.Status().Slots; sl[1].RestartPending || sl[1].Restarts != 1 {
		t.Fatalf("slots after the restart: %+v", sl)
	}

	// A stop during a reload aborts it.
	d.step(SignalReceived{Signal: SIGUSR2})
	d.step(ControlRequest{ID: 2, Command: CmdStop})
	o = d.m.Status().LastReload
	if o == nil || o.Seq != 3 || o.Result != ReloadAborted || o.Trigger != "SIGUSR2" || o.Reason != "mworker is stopping (soft stop)" {
		t.Fatalf("after the abort: last %+v", o)
	}
}

// What status says about reloads and slots survives a re-exec: the
// handover carries it, and the trigger of the reload that re-executes.
func TestReloadStatusSurvivesReexec(t *testing.T) {
	d := newStatusDriver(t, Config{Workers: 1, Ready: ReadyMode{Kind: ReadyNotify}, Reexec: ReexecAlways})
	d.step(Start{})
	d.step(WorkerReady{Pid: 101})
	d.step(ChildExited{Pid: 101, Status: ExitStatus{Code: 1}})
	d.step(TimerFired{Timer: Timer{Kind: TimerRestart, Generation: 1, Slot: 0}})
	d.step(WorkerReady{Pid: 101}) // the driver gives the restarted worker pid 101 again
	d.step(SignalReceived{Signal: SIGUSR2})
	if len(d.execs) != 1 {
		t.Fatalf("%d execs", len(d.execs))
	}
	h := d.execs[0].Handover
	if h.ReloadsBegun != 1 || h.ReloadTrigger != "SIGUSR2" || !slices.Equal(h.Restarts, []int{1}) {
		t.Fatalf("handover: begun %d trigger %q restarts %v", h.ReloadsBegun, h.ReloadTrigger, h.Restarts)
	}
	n := newStatusDriver(t, Config{Workers: 1, Ready: ReadyMode{Kind: ReadyNotify}, Reexec: ReexecAlways, Resume: &h})
	n.step(Start{})
	if s := n.m.Status(); s.ReloadTrigger != "SIGUSR2" || s.Slots[0].Restarts != 1 {
		t.Fatalf("resumed: trigger %q slots %+v", s.ReloadTrigger, s.Slots)
	}
	n.step(WorkerReady{Pid: 201})
	if o := n.m.Status().LastReload; o == nil || o.Seq != 1 || o.Result != ReloadSuccess || o.Trigger != "SIGUSR2" || !slices.Equal(o.Pids, []int{201}) {
		t.Fatalf("resumed, after the reload: %+v", o)
	}
}

func equalOutcome(a, b ReloadOutcome) bool {
	return a.Seq == b.Seq && a.Result == b.Result && a.Reason == b.Reason && a.Trigger == b.Trigger &&
		a.Generation == b.Generation && a.Previous == b.Previous && slices.Equal(a.Pids, b.Pids) && slices.Equal(a.Old, b.Old)
}
