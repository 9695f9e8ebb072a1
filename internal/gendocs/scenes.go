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

	unready     []int // started workers not yet ready
	restartable bool  // a current worker's exit arms a restart timer here

	// spawning is a prefix to the same state that ends with a Spawn whose
	// outcome the machine awaits (for pending). A spawn's outcome is
	// reported before any other event (see fsm.Spawn), so only the
	// WorkerStarted and SpawnFailed rows use it.
	spawning []fsm.Event
	pending  slot
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
	spawning := []fsm.Event{
		fsm.Start{},
		fsm.WorkerStarted{Generation: 3, Slot: 0, Pid: 301},
	}
	resumed := append(slices.Clone(spawning), fsm.WorkerStarted{Generation: 3, Slot: 1, Pid: 302})
	promoted := append(slices.Clone(resumed), fsm.WorkerReady{Pid: 301}, fsm.WorkerReady{Pid: 302})
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
				"started from its handover (Config.Resume): generation 2 (201, 202) is still current, " +
				"worker 101 of generation 1 is old and stopping, and the new generation 3 (301, 302) " +
				"has started but is not ready yet.",
			cfg:         resumedConfig(),
			prefix:      resumed,
			pids:        map[int]string{101: "old", 201: "current", 202: "current", 301: "new", 302: "new"},
			gens:        map[int]string{1: "old", 2: "current", 3: "new"},
			unready:     []int{301, 302},
			restartable: true,
			spawning:    spawning,
			pending:     slot{3, 1},
		},
		{
			sub:   "Exiting",
			title: "Exiting",
			about: "SIGTERM arrived during the reload above: the reload was aborted, request #5 answered " +
				"with an error, and every worker (old 101, current 201 and 202, new 301 and 302) was sent TERM.",
			cfg:     resumedConfig(),
			prefix:  append(slices.Clone(resumed), fsm.SignalReceived{Signal: fsm.SIGTERM}),
			pids:    map[int]string{101: "old", 201: "current", 202: "current", 301: "new", 302: "new"},
			gens:    map[int]string{1: "old", 2: "current", 3: "new"},
			unready: []int{301, 302},
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

// feed is what a row feeds to a fresh machine.
type feed struct {
	prefix []fsm.Event // replaces the scene's prefix when not nil
	setup  []fsm.Event // fed after the prefix; their actions are not shown
	ev     fsm.Event   // the event of the row
	note   string      // what setup did, or why the event cannot happen here
}

// spawnOutcome returns a feed that leaves a Spawn awaiting its outcome,
// and the (generation, slot, pid) of that spawn.
func (s *scene) spawnOutcome() (f feed, sl slot, pid int, ok bool) {
	if s.spawning != nil {
		return feed{prefix: s.spawning, note: "the second Spawn of the new generation"},
			s.pending, s.pending.gen*100 + s.pending.slot + 1, true
	}
	if !s.restartable {
		return feed{note: "nothing is spawned in this state"}, slot{}, 0, false
	}
	setup, t := s.restartSetup()
	return feed{setup: append(setup, fsm.TimerFired{Timer: t}), note: "after a current worker exited and its restart timer fired"},
		slot{t.Generation, t.Slot}, t.Generation*100 + 50 + t.Slot + 1, true
}

// row is one kind of event. make returns what to feed; ok false when the
// event cannot occur in the scene (feed.note says why).
type row struct {
	label  string
	make   func(s *scene) (f feed, ok bool)
	config func(*fsm.Config) // changes the scene's config for this row, or nil
}

// watchdogOn is --watchdog 30s.
func watchdogOn(c *fsm.Config) { c.Watchdog = 30 * time.Second }

func event(ev fsm.Event) func(*scene) (feed, bool) {
	return func(*scene) (feed, bool) { return feed{ev: ev}, true }
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
	return row{label + ")", event(fsm.SignalReceived{Signal: sig}), nil}
}

func timerRow(kind fsm.TimerKind, label string, pick func(s *scene) ([]fsm.Event, fsm.Timer, string)) row {
	return row{"TimerFired " + kind.String() + " (" + label + ")", func(s *scene) (feed, bool) {
		setup, t, note := pick(s)
		return feed{setup: setup, ev: fsm.TimerFired{Timer: t}, note: note}, true
	}, nil}
}

func control(id fsm.RequestID, cmd fsm.Command) row {
	label := "ControlRequest " + cmd.String()
	if _, known := fsm.ParseCommand(cmd.String()); !known {
		label = "ControlRequest of an unknown command"
	}
	return row{label, event(fsm.ControlRequest{ID: id, Command: cmd}), nil}
}

func childExited(role string, st fsm.ExitStatus) row {
	article := "a "
	if strings.ContainsRune("aeiou", rune(role[0])) {
		article = "an "
	}
	return row{"ChildExited of " + article + role + " worker (" + st.String() + ")", func(s *scene) (feed, bool) {
		pid := s.first(role)
		if pid == 0 {
			return feed{note: "no " + role + " worker in this state"}, false
		}
		return feed{ev: fsm.ChildExited{Pid: pid, Status: st}}, true
	}, nil}
}

func rows() []row {
	return []row{
		signalRow(fsm.RouteReload, fsm.SIGUSR2),
		signalRow(fsm.RouteSoftStop, fsm.SIGUSR1),
		signalRow(fsm.RouteTerminate, fsm.SIGTERM),
		signalRow(fsm.RouteForward, fsm.SIGWINCH),
		signalRow(fsm.RouteIgnore, fsm.SIGURG),
		{"WorkerStarted (the outcome of a Spawn)", func(s *scene) (feed, bool) {
			f, sl, pid, ok := s.spawnOutcome()
			f.ev = fsm.WorkerStarted{Generation: sl.gen, Slot: sl.slot, Pid: pid}
			return f, ok
		}, nil},
		{"SpawnFailed (the outcome of a Spawn: command not found)", func(s *scene) (feed, bool) {
			f, sl, _, ok := s.spawnOutcome()
			f.ev = fsm.SpawnFailed{Generation: sl.gen, Slot: sl.slot, Status: fsm.ExitStatus{Code: 127}, Err: "server: not found"}
			return f, ok
		}, nil},
		{"WorkerReady (a started worker, not the last one)", func(s *scene) (feed, bool) {
			if len(s.unready) > 0 {
				return feed{ev: fsm.WorkerReady{Pid: s.unready[0]}}, true
			}
			f, sl, pid, ok := s.spawnOutcome()
			if !ok || f.prefix != nil {
				return feed{note: "no worker waits to be ready in this state"}, false
			}
			f.setup = append(f.setup, fsm.WorkerStarted{Generation: sl.gen, Slot: sl.slot, Pid: pid})
			f.ev, f.note = fsm.WorkerReady{Pid: pid}, f.note+" and the worker started"
			return f, true
		}, nil},
		{"WorkerReady (the last worker of the new generation)", func(s *scene) (feed, bool) {
			if s.sub != "AwaitingReady" || len(s.unready) < 2 {
				return feed{note: "no new generation is being readied"}, false
			}
			return feed{
				setup: []fsm.Event{fsm.WorkerReady{Pid: s.unready[1]}},
				ev:    fsm.WorkerReady{Pid: s.unready[0]},
				note:  "the other new worker is ready already",
			}, true
		}, nil},
		{"WorkerWatchdog (WATCHDOG=1 of a current worker, under --watchdog 30s)", func(s *scene) (feed, bool) {
			return feed{ev: fsm.WorkerWatchdog{Pid: s.first("current")}}, true
		}, watchdogOn},
		{"WorkerWatchdog (WATCHDOG=1 of an old worker, under --watchdog 30s)", func(s *scene) (feed, bool) {
			if pid := s.first("old"); pid != 0 {
				return feed{ev: fsm.WorkerWatchdog{Pid: pid}}, true
			}
			return feed{note: "no old worker in this state"}, false
		}, watchdogOn},
		{"WorkerWatchdog trigger (WATCHDOG=trigger of a current worker, under --watchdog 30s)", func(s *scene) (feed, bool) {
			return feed{ev: fsm.WorkerWatchdog{Pid: s.first("current"), Trigger: true}}, true
		}, watchdogOn},
		{"TimerFired watchdog (a current worker silent for 30s, under --watchdog 30s)", func(s *scene) (feed, bool) {
			pid := s.first("current")
			return feed{setup: []fsm.Event{fsm.WorkerWatchdog{Pid: pid}}, ev: fsm.TimerFired{Timer: fsm.Timer{Kind: fsm.TimerWatchdog, Pid: pid}},
				note: "after its WATCHDOG=1"}, true
		}, watchdogOn},
		childExited("current", fsm.ExitStatus{Code: 1}),
		{"ChildExited of a current worker (exit:3) under --restart no", func(s *scene) (feed, bool) {
			return feed{ev: fsm.ChildExited{Pid: s.first("current"), Status: fsm.ExitStatus{Code: 3}}}, true
		}, func(c *fsm.Config) { c.Restart = fsm.RestartNo }},
		childExited("old", fsm.ExitStatus{Code: 0}),
		childExited("new", fsm.ExitStatus{Code: 1}),
		{"ChildExited of the last child (signal:TERM)", func(s *scene) (feed, bool) {
			if s.sub != "Exiting" {
				return feed{note: "only while exiting"}, false
			}
			last := s.first("current")
			var setup []fsm.Event
			for _, p := range slices.Sorted(maps.Keys(s.pids)) {
				if p != last {
					setup = append(setup, fsm.ChildExited{Pid: p, Status: fsm.ExitStatus{Code: 0}})
				}
			}
			return feed{setup: setup, ev: fsm.ChildExited{Pid: last, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}},
				note: "a current worker, after every other child was reaped"}, true
		}, nil},
		{"ChildExited of an unknown pid (an orphan reaped)", event(fsm.ChildExited{Pid: unknownPid, Status: fsm.ExitStatus{Code: 0}}), nil},
		{"NoChildren (wait4 said ECHILD)", event(fsm.NoChildren{}), nil},
		{"ExecFailed", event(execFailed), nil},
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
		timerRow(fsm.TimerReadyAfter, "a started worker; --ready DURATION, 1s by default", func(s *scene) ([]fsm.Event, fsm.Timer, string) {
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
