package main

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
)

// The scripts of docs/semantics.md: the scenes (a state and the prefix of
// events that reaches it on a fresh machine) and the rows (one kind of
// event each, resolved against a scene's workers by their role).

// scene is one state to document and the script that reaches it.
type scene struct {
	sub    string // the state the prefix must end in: Running, ExecPending, AwaitingReady, Exiting
	title  string // section heading
	about  string // what the prefix did, for the reader
	cfg    fsm.Config
	prefix []fsm.Event

	pids map[int]string // role of each pid the prefix created: current, old, new
	gens map[int]string // role of each generation

	pending     *slot // a spawn still in flight after the prefix
	unready     []int // started workers not yet ready
	restartable bool  // a current worker's exit arms a restart timer here
}

type slot struct{ gen, slot int }

const (
	stopSignal = fsm.SIGQUIT // the --stop-signal of the tables, unlike any signal fed to them
	unknownPid = 4242
)

func baseConfig() fsm.Config {
	return fsm.Config{
		Workers:      2,
		Path:         "/usr/local/bin/mworker",
		Argv:         []string{"mworker", "run", "-n", "2", "--ready", "notify", "--stop-signal", "QUIT", "--", "server"},
		Ready:        fsm.ReadyMode{Kind: fsm.ReadyNotify},
		ReadyTimeout: 30 * time.Second,
		StopSignal:   stopSignal,
		StopTimeout:  10 * time.Second,
		Restart:      fsm.RestartAlways,
	}
}

// resumedConfig is the new image after a reload from generation 2 asked
// for by control request #5, while worker 101 of generation 1 (an earlier
// reload) is still stopping.
func resumedConfig() fsm.Config {
	c := baseConfig()
	c.Argv = []string{"mworker", "run", "-n", "2", "--ready", "notify", "--stop-signal", "QUIT", "-sf", "101", "201", "202", "--", "server"}
	c.StopPids = []int{101, 201, 202}
	c.Resume = &fsm.Handover{
		Generation: 2, MaxGeneration: 2, Reloads: 1, Announced: true,
		Workers: []fsm.HandoverWorker{
			{Pid: 101, Generation: 1, Slot: 0, Ready: true, Stopping: true},
			{Pid: 201, Generation: 2, Slot: 0, Ready: true},
			{Pid: 202, Generation: 2, Slot: 1, Ready: true},
		},
		Timers: []fsm.Timer{
			{Kind: fsm.TimerStable, Pid: 201},
			{Kind: fsm.TimerStable, Pid: 202},
			{Kind: fsm.TimerKill, Generation: 1},
		},
		Requests: []fsm.RequestID{5},
		Failures: []int{0, 0},
	}
	return c
}

func scenes() []*scene {
	firstGen := []fsm.Event{
		fsm.Start{},
		fsm.WorkerStarted{Generation: 1, Slot: 0, Pid: 101},
		fsm.WorkerStarted{Generation: 1, Slot: 1, Pid: 102},
		fsm.WorkerReady{Pid: 101},
		fsm.WorkerReady{Pid: 102},
	}
	resumed := []fsm.Event{
		fsm.Start{},
		fsm.WorkerStarted{Generation: 3, Slot: 0, Pid: 301},
	}
	promoted := append(slices.Clone(resumed),
		fsm.WorkerStarted{Generation: 3, Slot: 1, Pid: 302},
		fsm.WorkerReady{Pid: 301},
		fsm.WorkerReady{Pid: 302},
	)
	return []*scene{
		{
			sub:   "Running",
			title: "Running",
			about: "A reload has just completed: generation 3 (workers 301, 302) is current and ready; " +
				"generation 2 (201, 202) and worker 101 of generation 1 are old and have been told to stop.",
			cfg:         resumedConfig(),
			prefix:      promoted,
			pids:        map[int]string{101: "old", 201: "old", 202: "old", 301: "current", 302: "current"},
			gens:        map[int]string{1: "old", 2: "old", 3: "current"},
			restartable: true,
		},
		{
			sub:   "ExecPending",
			title: "Reloading / ExecPending (the old image)",
			about: "Generation 1 (101, 102) is current and ready; SIGUSR2 made the master emit Exec. " +
				"Every event but ExecFailed is held: if the exec succeeds the new image never sees it. " +
				"If it fails, ExecFailed first does what its own row says (the reload is abandoned, the workers kept), " +
				"then the held events are replayed; the last columns show what the replay does.",
			cfg:    baseConfig(),
			prefix: append(slices.Clone(firstGen), fsm.SignalReceived{Signal: fsm.SIGUSR2}),
			pids:   map[int]string{101: "current", 102: "current"},
			gens:   map[int]string{1: "current"},
		},
		{
			sub:   "AwaitingReady",
			title: "Reloading / AwaitingReady (the new image)",
			about: "`mworker reload` (control request #5) made the old image re-execute; the new image " +
				"started from its handover (Config.Resume): generation 2 " +
				"(201, 202) is still current, worker 101 of generation 1 is old and stopping, and the new " +
				"generation 3 is being readied: 301 has started but is not ready, slot 1 is still being spawned.",
			cfg:         resumedConfig(),
			prefix:      resumed,
			pids:        map[int]string{101: "old", 201: "current", 202: "current", 301: "new"},
			gens:        map[int]string{1: "old", 2: "current", 3: "new"},
			pending:     &slot{3, 1},
			unready:     []int{301},
			restartable: true,
		},
		{
			sub:   "Exiting",
			title: "Exiting",
			about: "SIGTERM arrived during the reload above: the reload was aborted and every worker " +
				"(old 101, current 201 and 202, new 301) was sent TERM; slot 1 of generation 3 is still being spawned.",
			cfg:     resumedConfig(),
			prefix:  append(slices.Clone(resumed), fsm.SignalReceived{Signal: fsm.SIGTERM}),
			pids:    map[int]string{101: "old", 201: "current", 202: "current", 301: "new"},
			gens:    map[int]string{1: "old", 2: "current", 3: "new"},
			pending: &slot{3, 1},
			unready: []int{301},
		},
	}
}

func (s *scene) role(pid int) string {
	if r, ok := s.pids[pid]; ok {
		return r
	}
	if pid == unknownPid {
		return "unknown"
	}
	if r, ok := s.gens[pid/100]; ok {
		return r
	}
	return "pid " + strconv.Itoa(pid)
}

// first returns the lowest pid with the role, or 0.
func (s *scene) first(role string) int {
	best := 0
	for p, r := range s.pids {
		if r == role && (best == 0 || p < best) {
			best = p
		}
	}
	return best
}

func (s *scene) gen(role string) int {
	best := 0
	for g, r := range s.gens {
		if r == role && (best == 0 || g < best) {
			best = g
		}
	}
	return best
}

// restartSetup makes a current worker exit so that its slot's restart
// timer is armed; the timer itself is the caller's to fire.
func (s *scene) restartSetup() ([]fsm.Event, fsm.Timer) {
	cur := s.first("current")
	return []fsm.Event{fsm.ChildExited{Pid: cur, Status: fsm.ExitStatus{Code: 1}}},
		fsm.Timer{Kind: fsm.TimerRestart, Generation: cur / 100, Slot: cur%100 - 1}
}

// spawnInFlight returns a (generation, slot) whose spawn is under way,
// after setup events if the prefix left none.
func (s *scene) spawnInFlight() (setup []fsm.Event, sl slot, pid int, note string, ok bool) {
	if s.pending != nil {
		return nil, *s.pending, s.pending.gen*100 + s.pending.slot + 1, "", true
	}
	if !s.restartable {
		return nil, slot{}, 0, "", false
	}
	setup, t := s.restartSetup()
	setup = append(setup, fsm.TimerFired{Timer: t})
	return setup, slot{t.Generation, t.Slot}, t.Generation*100 + 50 + t.Slot + 1,
		"after a current worker exited and its restart timer fired", true
}

// row is one kind of event. make returns the event to feed, the events
// that prepare it (fed first, their actions not shown), and a note for the
// reader; ok false when the event cannot occur in the scene.
type row struct {
	label  string
	make   func(s *scene) (setup []fsm.Event, ev fsm.Event, note string, ok bool)
	config func(*fsm.Config) // changes the scene's config for this row, or nil
}

func signalRow(route fsm.Route, sig fsm.Signal) row {
	var all []string
	for n := fsm.Signal(1); n <= 31; n++ {
		if fsm.RouteOf(n) == route {
			all = append(all, n.String())
		}
	}
	label := "signal " + sig.String() + " (" + route.String() + ": " + strings.Join(all, ", ")
	if route == fsm.RouteForward {
		label = "signal " + sig.String() + " (" + route.String() + ": every signal not listed elsewhere"
	}
	return row{label + ")", func(*scene) ([]fsm.Event, fsm.Event, string, bool) {
		return nil, fsm.SignalReceived{Signal: sig}, "", true
	}, nil}
}

func timerRow(kind fsm.TimerKind, label string, pick func(s *scene) ([]fsm.Event, fsm.Timer, string)) row {
	return row{"TimerFired " + kind.String() + " (" + label + ")", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
		setup, t, note := pick(s)
		return setup, fsm.TimerFired{Timer: t}, note, true
	}, nil}
}

func control(id fsm.RequestID, cmd fsm.Command) row {
	label := "ControlRequest " + cmd.String()
	if _, known := fsm.ParseCommand(cmd.String()); !known {
		label = "ControlRequest of an unknown command"
	}
	return row{label, func(*scene) ([]fsm.Event, fsm.Event, string, bool) {
		return nil, fsm.ControlRequest{ID: id, Command: cmd}, "", true
	}, nil}
}

func childExited(role string, st fsm.ExitStatus) row {
	article := "a "
	if strings.ContainsRune("aeiou", rune(role[0])) {
		article = "an "
	}
	return row{"ChildExited of " + article + role + " worker (" + st.String() + ")", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
		pid := s.first(role)
		if pid == 0 {
			return nil, nil, "no " + role + " worker in this state", false
		}
		return nil, fsm.ChildExited{Pid: pid, Status: st}, "", true
	}, nil}
}

func rows() []row {
	return []row{
		signalRow(fsm.RouteReload, fsm.SIGUSR2),
		signalRow(fsm.RouteSoftStop, fsm.SIGUSR1),
		signalRow(fsm.RouteTerminate, fsm.SIGTERM),
		signalRow(fsm.RouteForward, fsm.SIGWINCH),
		signalRow(fsm.RouteIgnore, fsm.SIGURG),
		{"WorkerStarted (a spawn in flight)", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			setup, sl, pid, note, ok := s.spawnInFlight()
			if !ok {
				return nil, nil, "no spawn in flight in this state", false
			}
			return setup, fsm.WorkerStarted{Generation: sl.gen, Slot: sl.slot, Pid: pid}, note, true
		}, nil},
		{"SpawnFailed (a spawn in flight, command not found)", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			setup, sl, _, note, ok := s.spawnInFlight()
			if !ok {
				return nil, nil, "no spawn in flight in this state", false
			}
			return setup, fsm.SpawnFailed{Generation: sl.gen, Slot: sl.slot, Status: fsm.ExitStatus{Code: 127}, Err: "server: not found"}, note, true
		}, nil},
		{"WorkerReady (a started worker, not the last one)", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			if len(s.unready) > 0 {
				return nil, fsm.WorkerReady{Pid: s.unready[0]}, "", true
			}
			setup, sl, pid, note, ok := s.spawnInFlight()
			if !ok || s.pending != nil {
				return nil, nil, "no worker waits to be ready in this state", false
			}
			setup = append(setup, fsm.WorkerStarted{Generation: sl.gen, Slot: sl.slot, Pid: pid})
			return setup, fsm.WorkerReady{Pid: pid}, note + " and the worker started", true
		}, nil},
		{"WorkerReady (the last worker of the new generation)", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			if s.sub != "AwaitingReady" || s.pending == nil || len(s.unready) == 0 {
				return nil, nil, "no new generation is being readied", false
			}
			p := s.pending.gen*100 + s.pending.slot + 1
			setup := []fsm.Event{
				fsm.WorkerStarted{Generation: s.pending.gen, Slot: s.pending.slot, Pid: p},
				fsm.WorkerReady{Pid: p},
			}
			return setup, fsm.WorkerReady{Pid: s.unready[0]}, "after the other new worker started and became ready", true
		}, nil},
		childExited("current", fsm.ExitStatus{Code: 1}),
		{"ChildExited of a current worker (exit:3) under --restart no", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			return nil, fsm.ChildExited{Pid: s.first("current"), Status: fsm.ExitStatus{Code: 3}}, "", true
		}, func(c *fsm.Config) { c.Restart = fsm.RestartNo }},
		childExited("old", fsm.ExitStatus{Code: 0}),
		childExited("new", fsm.ExitStatus{Code: 1}),
		{"ChildExited of the last child (signal:TERM)", func(s *scene) ([]fsm.Event, fsm.Event, string, bool) {
			if s.sub != "Exiting" {
				return nil, nil, "only while exiting", false
			}
			last := s.first("current")
			var setup []fsm.Event
			if s.pending != nil {
				setup = append(setup, fsm.SpawnFailed{Generation: s.pending.gen, Slot: s.pending.slot, Status: fsm.ExitStatus{Code: 1}, Err: "aborted"})
			}
			for _, p := range slices.Sorted(maps.Keys(s.pids)) {
				if p != last {
					setup = append(setup, fsm.ChildExited{Pid: p, Status: fsm.ExitStatus{Code: 0}})
				}
			}
			return setup, fsm.ChildExited{Pid: last, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}}, "a current worker, after every other child was reaped", true
		}, nil},
		{"ChildExited of an unknown pid (an orphan reaped)", func(*scene) ([]fsm.Event, fsm.Event, string, bool) {
			return nil, fsm.ChildExited{Pid: unknownPid, Status: fsm.ExitStatus{Code: 0}}, "", true
		}, nil},
		{"NoChildren (wait4 said ECHILD)", func(*scene) ([]fsm.Event, fsm.Event, string, bool) {
			return nil, fsm.NoChildren{}, "", true
		}, nil},
		{"ExecFailed", func(*scene) ([]fsm.Event, fsm.Event, string, bool) {
			return nil, fsm.ExecFailed{Err: "permission denied"}, "", true
		}, nil},
		timerRow(fsm.TimerRestart, "slot 0 of the current generation", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
			if s.restartable {
				setup, t := s.restartSetup()
				return setup, t, "after that worker exited"
			}
			cur := s.first("current")
			return nil, fsm.Timer{Kind: fsm.TimerRestart, Generation: cur / 100, Slot: 0}, ""
		}),
		timerRow(fsm.TimerStable, "a current worker", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
			return nil, fsm.Timer{Kind: fsm.TimerStable, Pid: s.first("current")}, ""
		}),
		timerRow(fsm.TimerReadyAfter, "a started worker; --ready DURATION only", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
			pid := s.first("current")
			if len(s.unready) > 0 {
				pid = s.unready[0]
			}
			return nil, fsm.Timer{Kind: fsm.TimerReadyAfter, Pid: pid}, ""
		}),
		timerRow(fsm.TimerReadyTimeout, "the new generation", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
			g := s.gen("new")
			if g == 0 {
				g = s.gen("current") + 1
			}
			return nil, fsm.Timer{Kind: fsm.TimerReadyTimeout, Generation: g}, ""
		}),
		timerRow(fsm.TimerKill, "the oldest old generation", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
			g := s.gen("old")
			if g == 0 {
				g = s.gen("current")
			}
			return nil, fsm.Timer{Kind: fsm.TimerKill, Generation: g}, ""
		}),
		timerRow(fsm.TimerKillAll, "the master is exiting", func(*scene) ([]fsm.Event, fsm.Timer, string) {
			return nil, fsm.Timer{Kind: fsm.TimerKillAll}, ""
		}),
		control(7, fsm.CmdReload),
		control(8, fsm.CmdStop),
		control(9, fsm.CmdStatus),
		control(10, fsm.Command(99)),
	}
}
