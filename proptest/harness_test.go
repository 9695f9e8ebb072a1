package proptest

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/mworker/mworker/fsm"
	"pgregory.net/rapid"
)

const (
	maxEvents  = 200 // events per sequence, final drain included
	orphanBase = 50000
	foreignPid = 70000 // -sf/-st pids of another master: 70001..70003
)

// counters of what the default run really exercised, logged by TestMachine.
var stats struct {
	sequences, events, maxLen, execOK, execFailed, promotions, rollbacks, exits, limits, capKills atomic.Int64
	scales, restarted, restartFailed, batches, batchesKept, delays                                atomic.Int64
}

// segment is the life of one Machine: its config and every step, kept to
// replay it on a fresh Machine (invariant 8).
type segment struct {
	cfg     fsm.Config
	events  []fsm.Event
	actions [][]fsm.Action
}

// harness drives one Machine (or a chain of them across successful execs)
// with events drawn by rapid and checks every step against the model.
type harness struct {
	t      *rapid.T
	base   fsm.Config
	m      *fsm.Machine
	model  *model
	seg    *segment
	eager  bool // spawn outcomes reported right after the Spawn, as the adapter must
	events int
	nextID fsm.RequestID
	exits  int
	trace  trace
	// armed is the machine's timer set as its actions tell it (SetTimer,
	// CancelTimer, and TimerFired of an armed timer), compared with the
	// model's after each step.
	armed map[fsm.Timer]bool
}

func newHarness(t *rapid.T) *harness {
	cfg := drawConfig(t)
	h := &harness{t: t, base: cfg, model: newModel(cfg), eager: rapid.IntRange(0, 3).Draw(t, "eager") > 0, nextID: 1, armed: map[fsm.Timer]bool{}}
	h.start(cfg)
	return h
}

// start builds a Machine for cfg and feeds Start.
func (h *harness) start(cfg fsm.Config) {
	m, err := fsm.New(cfg)
	if err != nil {
		h.t.Fatalf("fsm.New(%+v): %v", cfg, err)
	}
	h.m = m
	h.seg = &segment{cfg: cfg}
	h.model.cfg = cfg
	h.model.phase = phIdle
	h.model.upgrade = false // the new image is the binary at the start path
	h.feed(fsm.Start{})
}

func (h *harness) fatalf(format string, a ...any) {
	h.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, format, a...)
	b.WriteString("\nlast steps (a line of = marks a successful exec):\n")
	from := max(0, len(h.trace.steps)-40)
	for i := from; i < len(h.trace.steps); i++ {
		s := h.trace.steps[i]
		if s.fresh && i > 0 {
			b.WriteString("  ====\n")
		}
		fmt.Fprintf(&b, "  > %v\n", s.ev)
		for _, a := range s.acts {
			if _, ok := a.(fsm.Log); !ok {
				fmt.Fprintf(&b, "      %v\n", a)
			}
		}
	}
	h.t.Fatal(b.String())
}

// feed steps the machine with ev, checks the step, and plays the world's
// answer to what the machine asked for (spawn outcomes, the exec).
func (h *harness) feed(ev fsm.Event) {
	h.t.Helper()
	h.events++
	prePhase, preCur := h.model.phase, h.model.cur
	x := h.model.step(ev)
	acts := h.m.Step(ev)
	h.seg.events = append(h.seg.events, ev)
	h.seg.actions = append(h.seg.actions, acts)
	h.trace.steps = append(h.trace.steps, traceStep{ev, acts, len(h.seg.events) == 1})
	exec := h.check(ev, x, acts, prePhase, preCur)
	if exec != nil {
		h.afterExec(exec)
		return
	}
	// The pull accessor tells what a status request would: after every
	// step, the model's view.
	if h.model.phase != phExecPending && h.model.phase != phExited {
		got := h.m.Status()
		got.Workers = slices.Clone(got.Workers)
		sort.Slice(got.Workers, func(i, j int) bool { return got.Workers[i].Pid < got.Workers[j].Pid })
		if want := h.model.status(); !reflect.DeepEqual(unmodelled(got), want) {
			h.fatalf("Machine.Status() after %v differs from the model:\n got %v\nwant %v", ev, got, want)
		}
	}
	if h.eager {
		h.resolveSpawns()
	}
}

func (h *harness) resolveSpawns() {
	for len(h.model.spawns) > 0 && h.model.phase != phExecPending {
		h.resolveSpawn(h.spawnKeys()[0])
	}
}

func (h *harness) spawnKeys() [][2]int {
	var keys [][2]int
	for k := range h.model.spawns {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	return keys
}

func (h *harness) resolveSpawn(k [2]int) {
	if rapid.IntRange(0, 15).Draw(h.t, "spawnFails") == 0 {
		st := rapid.SampledFrom([]int{1, 126, 127}).Draw(h.t, "spawnStatus")
		h.feed(fsm.SpawnFailed{Generation: k[0], Slot: k[1], Status: fsm.ExitStatus{Code: st}, Err: "cannot start"})
		return
	}
	pid := h.model.nextPid + 1
	if dead := h.deadPids(); len(dead) > 0 && rapid.IntRange(0, 7).Draw(h.t, "reusePid") == 0 {
		// The kernel recycles pids: a new worker may get a reaped one's.
		pid = rapid.SampledFrom(dead).Draw(h.t, "reusedPid")
		delete(h.model.dead, pid)
	} else {
		h.model.nextPid = pid
	}
	h.feed(fsm.WorkerStarted{Generation: k[0], Slot: k[1], Pid: pid})
}

// check compares one step with the model and the invariants. It returns the
// Exec action when there is one.
func (h *harness) check(ev fsm.Event, x *expectation, acts []fsm.Action, prePhase phase, preCur int) *fsm.Exec {
	h.t.Helper()
	mo := h.model
	if prePhase == phExited && len(acts) > 0 {
		h.fatalf("invariant 1: %v after Exit returned %v", ev, acts)
	}
	if x.silent && len(acts) > 0 {
		h.fatalf("invariant 5: %v after Exec returned %v", ev, acts)
	}
	var (
		spawns          [][2]int
		kills, sigPids  []sigPid
		notifies        []fsm.NotifyState
		stopListening   int
		suspends        int
		timers          []fsm.SetTimer
		cancels         []fsm.Timer
		replies         = map[fsm.RequestID]bool{}
		execA           *fsm.Exec
		exitA           *fsm.Exit
		onlyLogs        = true
		servingSignaled []int
	)
	if tf, ok := ev.(fsm.TimerFired); ok {
		delete(h.armed, tf.Timer) // the machine forgets a timer as it fires
	}
	forwarded := fsm.Signal(0)
	if s, ok := ev.(fsm.SignalReceived); ok && signalRoute(s.Signal) == fsm.RouteForward {
		forwarded = s.Signal
	}
	for i, a := range acts {
		if _, ok := a.(fsm.Log); !ok {
			onlyLogs = false
		}
		switch a := a.(type) {
		case fsm.Spawn:
			spawns = append(spawns, [2]int{a.Generation, a.Slot})
		case fsm.Kill:
			if len(a.Pids) == 0 {
				h.fatalf("kill with no pid: %v", a)
			}
			for _, p := range a.Pids {
				c := mo.workers[p]
				if p <= 0 || c == nil && !mo.seen[p] {
					h.fatalf("invariant 2: %v targets pid %d, not a live child the machine knows (step %v)", a, p, ev)
				}
				if mo.lost[p] {
					h.fatalf("invariant 2: %v targets pid %d, which wait4 just reported gone (step %v)", a, p, ev)
				}
				if c != nil && c.home == preCur && a.Signal != forwarded && !c.leaving && !c.replacing {
					servingSignaled = append(servingSignaled, p)
				}
				kills = append(kills, sigPid{a.Signal, p})
			}
		case fsm.SignalPids:
			for _, p := range a.Pids {
				if p <= foreignPid || p > foreignPid+3 || mo.workers[p] != nil || mo.signalled[p] {
					h.fatalf("invariant 4: %v signals pid %d, not a pending -sf/-st pid of another master", a, p)
				}
				mo.signalled[p] = true
				sigPids = append(sigPids, sigPid{a.Signal, p})
			}
		case fsm.Exec:
			if i != len(acts)-1 {
				h.fatalf("invariant 5: actions after Exec in one step: %v", acts[i+1:])
			}
			execA = &a
		case fsm.Exit:
			if i != len(acts)-1 {
				h.fatalf("invariant 1: actions after Exit: %v", acts[i+1:])
			}
			if h.exits > 0 {
				h.fatalf("invariant 1: a second Exit")
			}
			if len(mo.workers) > 0 || len(mo.spawns) > 0 {
				h.fatalf("invariant 1: Exit while children %v and spawns %v are alive", mo.pids(nil), mo.spawnsList())
			}
			h.exits++
			exitA = &a
		case fsm.SetTimer:
			h.armed[a.Timer] = true
			timers = append(timers, a)
		case fsm.CancelTimer:
			if !h.armed[a.Timer] && !x.merged {
				h.fatalf("%v cancels a timer the machine has not armed (step %v)", a, ev)
			}
			delete(h.armed, a.Timer)
			cancels = append(cancels, a.Timer)
		case fsm.StopListening:
			stopListening++
		case fsm.Suspend:
			if !slices.ContainsFunc(kills, func(k sigPid) bool { return k.sig == a.Signal }) && len(mo.pids(mo.serving)) > 0 {
				h.fatalf("%v before the forward of %v to the serving workers (step %v)", a, a.Signal, ev)
			}
			suspends++
		case fsm.Notify:
			notifies = append(notifies, a.State)
		case fsm.Reply:
			if !mo.open[a.ID] {
				h.fatalf("invariant 3: %v answers request %d, which is not waiting for an answer", a, a.ID)
			}
			delete(mo.open, a.ID)
			if !a.OK && a.Error == "" {
				h.fatalf("reply %d failed without a reason", a.ID)
			}
			replies[a.ID] = a.OK
			if want := x.status[a.ID]; want != nil {
				got := a.Status
				if got == nil {
					h.fatalf("status reply %d without status", a.ID)
				}
				g := *got
				g.Workers = slices.Clone(g.Workers)
				sort.Slice(g.Workers, func(i, j int) bool { return g.Workers[i].Pid < g.Workers[j].Pid })
				if !reflect.DeepEqual(unmodelled(&g), want) {
					h.fatalf("status differs from the model (invariants 4, 6):\n got %v\nwant %v", &g, want)
				}
			}
		case fsm.Log:
		default:
			h.fatalf("unknown action %T", a)
		}
	}

	if x.noise {
		if !onlyLogs {
			h.fatalf("%v should be ignored in %v, got %v", ev, prePhase, acts)
		}
		return nil
	}
	if !sameSet(spawns, x.spawns) {
		h.fatalf("%v: spawns %v, model wants %v", ev, spawns, x.spawns)
	}
	if !sameSet(kills, x.kills) {
		h.fatalf("%v: kills %v, model wants %v", ev, kills, x.kills)
	}
	if !sameSet(sigPids, x.signalPids) {
		h.fatalf("%v: signal-pids %v, model wants %v", ev, sigPids, x.signalPids)
	}
	// The listeners are closed once, as the stop of everything begins.
	if want := map[bool]int{true: 1}[x.stopped]; stopListening != want {
		h.fatalf("%v: %d stop-listening actions, model wants %d (the step began the stop: %v)", ev, stopListening, want, x.stopped)
	}
	if suspends != x.suspends {
		h.fatalf("%v: %d suspend actions, model wants %d", ev, suspends, x.suspends)
	}
	if !slices.Equal(notifies, x.notifies) {
		h.fatalf("%v: notifies %v, model wants %v", ev, notifies, x.notifies)
	}
	if !sameTimers(timers, x.timers, h.seg.cfg.Seed != 0) {
		h.fatalf("%v: timers set %v, model wants %v (jitter %v)", ev, timers, x.timers, h.seg.cfg.Seed != 0)
	}
	if !sameSet(cancels, x.cancels) {
		h.fatalf("%v: timers cancelled %v, model wants %v", ev, cancels, x.cancels)
	}
	// The armed set after the step. When held events were replayed within
	// it (after ExecFailed), the actions do not say where a held TimerFired
	// fell among them, so the machine's set is not known from them: the
	// harness takes the model's and the next handover or step checks it.
	if x.merged {
		h.armed = maps.Clone(mo.armed)
	} else if !maps.Equal(h.armed, mo.armed) {
		h.fatalf("%v: armed timers %v, model wants %v", ev, timerList(h.armed), timerList(mo.armed))
	}
	if len(replies) != len(x.replies) {
		h.fatalf("invariant 3: %v: replies %v, model wants %v", ev, replies, x.replies)
	}
	for id, ok := range x.replies {
		if got, found := replies[id]; !found || got != ok {
			h.fatalf("invariant 3: %v: replies %v, model wants %v", ev, replies, x.replies)
		}
	}
	if x.exec != (execA != nil) {
		h.fatalf("%v: exec %v, model wants exec=%v", ev, execA, x.exec)
	}
	if x.exit != (exitA != nil) || exitA != nil && exitA.Status != x.exitStatus {
		h.fatalf("invariant 7: %v: exit %v, model wants exit=%v status %d", ev, exitA, x.exit, x.exitStatus)
	}
	if exitA != nil && len(mo.open) > 0 {
		h.fatalf("invariant 3: Exit leaves requests %v unanswered", mo.open)
	}
	// Invariant 6: during a reload the serving generation hears only
	// forwarded signals, unless the new one was promoted or everything stops.
	if prePhase == phAwaiting && !x.promoted && !x.stopped && len(servingSignaled) > 0 {
		h.fatalf("invariant 6: %v: serving generation %d signalled during a reload: %v", ev, preCur, servingSignaled)
	}
	if got, want := h.m.State(), mo.phase.String(); got != want {
		h.fatalf("%v: machine is %s, model says %s", ev, got, want)
	}
	if x.promoted {
		stats.promotions.Add(1)
	}
	if x.rolledBack {
		stats.rollbacks.Add(1)
	}
	if exitA != nil {
		stats.exits.Add(1)
	}
	return execA
}

// timerList lists a timer set in a stable order, for messages.
func timerList(set map[fsm.Timer]bool) []fsm.Timer {
	var out []fsm.Timer
	for t := range set {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b fsm.Timer) int { return strings.Compare(a.String(), b.String()) })
	return out
}

func (m *model) spawnsList() [][2]int {
	var out [][2]int
	for k := range m.spawns {
		out = append(out, k)
	}
	return out
}

// sameTimers compares the timers set with those the model wants, as
// multisets. With jitter (a seed), a restart delay may be anything in
// [d/2, d) of the model's d: the model checks the range the jitter
// promises, not the PRNG's sequence, which invariant 8 (replay) and the
// golden scenarios pin down.
func sameTimers(got, want []fsm.SetTimer, jitter bool) bool {
	if len(got) != len(want) {
		return false
	}
	used := make([]bool, len(got))
	for _, w := range want {
		found := false
		for i, g := range got {
			if used[i] || g.Timer != w.Timer {
				continue
			}
			inRange := jitter && w.Timer.Kind == fsm.TimerRestart && g.After >= w.After/2 && g.After < w.After
			if g.After == w.After && !(jitter && w.Timer.Kind == fsm.TimerRestart) || inRange {
				used[i], found = true, true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sameSet compares two lists as multisets.
func sameSet[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	n := map[T]int{}
	for _, v := range a {
		n[v]++
	}
	for _, v := range b {
		n[v]--
		if n[v] < 0 {
			return false
		}
	}
	return true
}

// afterExec checks the Exec against the world (invariant 4), probes the
// machine in its exec-pending state on a replica (invariant 5), and then
// plays the outcome: the exec fails, or a fresh machine resumes.
func (h *harness) afterExec(a *fsm.Exec) {
	mo := h.model
	if len(mo.spawns) > 0 {
		h.fatalf("invariant 4: Exec while spawns %v are in flight: their children would miss the -sf list", mo.spawnsList())
	}
	live := mo.pids(nil)
	for _, p := range live {
		if mo.lost[p] {
			h.fatalf("invariant 4: Exec lists pid %d in -sf, which wait4 just reported gone", p)
		}
	}
	head, tail := cut(a.Argv)
	oldHead, oldTail := cut(h.seg.cfg.Argv)
	pids, sf, st := sfList(a.Argv)
	slices.Sort(pids)
	wantSF := 0
	if len(live) > 0 {
		wantSF = 1
	}
	switch {
	case a.Path != h.seg.cfg.Path:
		h.fatalf("exec path %q, want %q", a.Path, h.seg.cfg.Path)
	case !slices.Equal(tail, oldTail):
		h.fatalf("exec argv %q changed the worker command %q", a.Argv, oldTail)
	case sf != wantSF || st != 0:
		h.fatalf("invariant 4: exec argv %q has %d -sf and %d -st lists, want %d and 0", a.Argv, sf, st, wantSF)
	case !slices.Equal(pids, live):
		h.fatalf("invariant 4: exec -sf list %v, live workers %v", pids, live)
	case !slices.Equal(withoutLists(head), withoutLists(oldHead)):
		h.fatalf("exec argv %q lost options of %q", a.Argv, h.seg.cfg.Argv)
	case len(live) > 0 && head[len(head)-len(live)-1] != "-sf":
		h.fatalf("exec argv %q: the -sf list is not right before --", a.Argv)
	}
	ho := a.Handover
	var hw []fsm.HandoverWorker
	for _, p := range live {
		c := mo.workers[p]
		w := fsm.HandoverWorker{Pid: p, Generation: c.gen, Slot: c.slot, Ready: c.ready, Stopping: mo.retired[c.home] || c.leaving, Leaving: c.leaving,
			Replacing: c.replacing && !c.leaving}
		if c.home != c.gen && !c.leaving {
			w.Home = c.home
		}
		hw = append(hw, w)
	}
	var armed []fsm.Timer
	for t := range mo.armed {
		armed = append(armed, t)
	}
	var open []fsm.RequestID
	for id := range mo.open {
		open = append(open, id)
	}
	switch {
	case !sameSet(ho.Workers, hw):
		h.fatalf("invariant 4: handover workers %v, model %v", ho.Workers, hw)
	case !sameSet(ho.Timers, armed):
		h.fatalf("handover timers %v, armed %v", ho.Timers, armed)
	case !sameSet(ho.Requests, mo.requests) || !sameSet(ho.Requests, open):
		h.fatalf("invariant 3: handover requests %v, model waits on %v, open %v", ho.Requests, mo.requests, open)
	case ho.Generation != mo.cur || ho.Reloads != mo.reloads || ho.FailedReloads != mo.failedReloads || ho.Announced != mo.announced:
		h.fatalf("handover %+v disagrees with the model (cur %d reloads %d failed %d announced %v)", ho, mo.cur, mo.reloads, mo.failedReloads, mo.announced)
	case ho.Size != mo.size:
		h.fatalf("handover size %d, model %d", ho.Size, mo.size)
	case !sameSet(ho.StopPids, mo.foreignStop) || !sameSet(ho.TermPids, mo.foreignTerm):
		h.fatalf("handover -sf/-st %v %v, model %v %v", ho.StopPids, ho.TermPids, mo.foreignStop, mo.foreignTerm)
	}

	h.probeExecPending()

	if rapid.IntRange(0, 2).Draw(h.t, "execFails") == 0 {
		// Events that arrive before the exec's outcome are held by the
		// machine (no action: invariant 5) and replayed after ExecFailed.
		// fsm/doc.go tells the caller to feed nothing there, so a held
		// control request may go unanswered when a held event ends the
		// run; the probe feeds those to a replica instead.
		for range rapid.IntRange(0, 3).Draw(h.t, "held") {
			ev := h.anyEvent("held")
			if _, ctl := ev.(fsm.ControlRequest); !ctl && !isExecFailed(ev) {
				h.feed(ev)
			}
		}
		stats.execFailed.Add(1)
		h.feed(fsm.ExecFailed{Err: "exec format error"})
		return
	}
	stats.execOK.Add(1)
	h.replay(h.seg)
	cfg := h.base
	cfg.Argv = a.Argv
	cfg.StopPids, cfg.TermPids = pids, nil
	resume := a.Handover
	cfg.Resume = &resume
	held := h.model.deferred
	h.model.deferred = nil
	h.start(cfg)
	// What the old image held unseen reaches the new one: signals stay
	// pending across the exec, the adapter hands requests over.
	for _, ev := range held {
		h.feed(ev)
	}
}

// probeExecPending replays this machine's steps on a replica, which must
// agree (invariant 8) and end in the exec-pending state, then feeds it
// random events: none may yield an action (invariant 5). ExecFailed then
// brings it back without a panic.
func (h *harness) probeExecPending() {
	r := h.replay(h.seg)
	n := rapid.IntRange(0, 4).Draw(h.t, "probeEvents")
	for range n {
		ev := h.anyEvent("probe")
		if isExecFailed(ev) {
			continue
		}
		if got := r.Step(ev); len(got) > 0 {
			h.fatalf("invariant 5: %v after Exec returned %v", ev, got)
		}
	}
	if r.State() != "reloading" {
		h.fatalf("invariant 5: replica left the exec-pending state: %s", r.State())
	}
	r.Step(fsm.ExecFailed{Err: "probe"})
}

func isExecFailed(ev fsm.Event) bool {
	_, ok := ev.(fsm.ExecFailed)
	return ok
}

// replay runs seg on a fresh machine and fails unless every step yields the
// same actions (invariant 8). It returns the replica.
func (h *harness) replay(seg *segment) *fsm.Machine {
	r, err := fsm.New(seg.cfg)
	if err != nil {
		h.fatalf("fsm.New on replay: %v", err)
	}
	for i, ev := range seg.events {
		if got := r.Step(ev); !reflect.DeepEqual(got, seg.actions[i]) {
			h.fatalf("invariant 8: step %d (%v) replayed to\n  %v\nnot\n  %v", i, ev, got, seg.actions[i])
		}
	}
	return r
}

// ---- the state machine test ----

// budget keeps a sequence, its final drain included, within maxEvents: the
// drain needs one event per live child or spawn, and one action may start
// a whole generation.
func (h *harness) budget() bool {
	return h.events+len(h.model.workers)+len(h.model.spawns)+28 < maxEvents
}

func (h *harness) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"signal": func(t *rapid.T) {
			if h.budget() {
				h.feed(fsm.SignalReceived{Signal: h.drawSignal("signal")})
			}
		},
		"control": func(t *rapid.T) {
			if h.budget() {
				h.nextID++
				cmd := rapid.SampledFrom([]fsm.Command{fsm.CmdReload, fsm.CmdStop, fsm.CmdStatus, fsm.CmdScale, fsm.CmdScale, fsm.CmdRestart, fsm.CmdRestart, 0, 9}).Draw(t, "command")
				if h.model.phase == phExited {
					return // nobody is listening any more
				}
				h.feed(fsm.ControlRequest{ID: h.nextID, Command: cmd, Arg: h.drawArg(cmd)})
			}
		},
		"status": func(t *rapid.T) {
			if h.budget() && h.model.phase != phExited {
				h.nextID++
				h.feed(fsm.ControlRequest{ID: h.nextID, Command: fsm.CmdStatus})
			}
		},
		"ready": func(t *rapid.T) {
			if h.budget() {
				pid, ok := h.pick("unready", h.model.pids(func(c *child) bool { return !c.ready }))
				if !ok || rapid.Bool().Draw(t, "anyPid") {
					pid = h.drawPid("ready")
				}
				h.feed(fsm.WorkerReady{Pid: pid})
			}
		},
		"watchdog": func(t *rapid.T) {
			if h.budget() {
				h.feed(h.drawWatchdog("watchdog"))
			}
		},
		"exit": func(t *rapid.T) {
			if h.budget() {
				h.feed(fsm.ChildExited{Pid: h.drawPid("exit"), Status: h.drawStatus("status")})
			}
		},
		"timer": func(t *rapid.T) {
			if h.budget() {
				h.feed(fsm.TimerFired{Timer: h.drawTimer("timer")})
			}
		},
		"spawnOutcome": func(t *rapid.T) {
			if h.budget() && len(h.model.spawns) > 0 {
				h.resolveSpawn(rapid.SampledFrom(h.spawnKeys()).Draw(t, "spawn"))
			}
		},
		"nonsense": func(t *rapid.T) {
			if h.budget() {
				ev := h.anyEvent("nonsense")
				if _, ok := ev.(fsm.ControlRequest); ok && h.model.phase == phExited {
					return // nobody is listening any more
				}
				h.feed(ev)
			}
		},
		"": func(t *rapid.T) { h.invariants() },
	}
}

// invariants are the checks that hold between any two events.
func (h *harness) invariants() {
	mo := h.model
	if h.exits > 1 {
		h.fatalf("invariant 1: %d exits", h.exits)
	}
	if (h.exits == 1) != (mo.phase == phExited) {
		h.fatalf("invariant 1: exits %d in phase %v", h.exits, mo.phase)
	}
	if mo.phase == phExecPending {
		h.fatalf("exec left pending between events")
	}
	h.trace.scan(h)
	if mo.phase == phRunning && len(mo.genPids(mo.cur)) == 0 && !mo.restartArmed() && !mo.spawning(mo.cur) {
		h.fatalf("running with no current worker and nothing that will start one: the master serves nothing and never exits")
	}
}

// drain stops the master the way an operator would and plays every exit:
// the run must end in one Exit that answers every request.
func (h *harness) drain() {
	mo := h.model
	if mo.phase != phExited {
		h.feed(fsm.SignalReceived{Signal: fsm.SIGTERM})
	}
	for guard := 0; mo.phase != phExited && guard < 10000; guard++ {
		if t := (fsm.Timer{Kind: fsm.TimerShutdownDelay}); mo.armed[t] {
			h.feed(fsm.TimerFired{Timer: t}) // the operator waits the delay out
			continue
		}
		if len(mo.spawns) > 0 {
			h.resolveSpawn(h.spawnKeys()[0])
			continue
		}
		pids := mo.pids(nil)
		if len(pids) == 0 {
			break
		}
		h.feed(fsm.ChildExited{Pid: pids[0], Status: fsm.ExitStatus{Signal: fsm.SIGTERM}})
	}
	if mo.phase != phExited || h.exits != 1 {
		h.fatalf("invariant 1: no Exit after every child was reaped (phase %v)", mo.phase)
	}
	if len(mo.open) > 0 {
		h.fatalf("invariant 3: requests %v never answered", mo.open)
	}
	h.feed(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	h.invariants()
	h.replay(h.seg)
}

// machineProperty is one random life of the master.
func machineProperty(t *rapid.T) {
	h := newHarness(t)
	t.Repeat(h.actions())
	h.drain()
	stats.sequences.Add(1)
	stats.events.Add(int64(h.events))
	for {
		m := stats.maxLen.Load()
		if int64(h.events) <= m || stats.maxLen.CompareAndSwap(m, int64(h.events)) {
			break
		}
	}
}
