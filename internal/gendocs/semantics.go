package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
)

// docs/semantics.md is found, not written: for each state, a real machine
// is driven there by a fixed prefix script, and every kind of event is fed
// to a fresh copy of it (the prefix replayed on a new machine). The table
// records the actions that came out and the state the machine ended in.

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
				"Every event but ExecFailed is held: if the exec succeeds the new image never sees it; " +
				"if it fails, the held events are replayed right after ExecFailed, which the last columns show.",
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

// machine replays the scene's prefix on a fresh machine and tracks which
// timers are armed.
type machine struct {
	*fsm.Machine
	s     *scene
	armed map[fsm.Timer]bool
	sub   string
}

func (s *scene) start(config func(*fsm.Config)) (*machine, error) {
	cfg := s.cfg
	if config != nil {
		config(&cfg)
	}
	m, err := fsm.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("gendocs: scene %s: %w", s.sub, err)
	}
	mm := &machine{Machine: m, s: s, armed: map[fsm.Timer]bool{}}
	if s.cfg.Resume != nil {
		for _, t := range s.cfg.Resume.Timers {
			mm.armed[t] = true
		}
	}
	mm.sub = "Idle"
	mm.feed(s.prefix...)
	if mm.sub != s.sub {
		return nil, fmt.Errorf("gendocs: the prefix of scene %s ends in %s, not %s: fix the script in internal/gendocs/semantics.go", s.sub, mm.sub, s.sub)
	}
	return mm, nil
}

func (m *machine) feed(evs ...fsm.Event) []fsm.Action {
	var all []fsm.Action
	for _, ev := range evs {
		acts := m.Step(ev)
		if tf, ok := ev.(fsm.TimerFired); ok {
			delete(m.armed, tf.Timer)
		}
		for _, a := range acts {
			switch a := a.(type) {
			case fsm.SetTimer:
				m.armed[a.Timer] = true
			case fsm.CancelTimer:
				delete(m.armed, a.Timer)
			}
		}
		m.sub = substate(m.State(), m.sub, acts)
		all = append(all, acts...)
	}
	return all
}

// substate names the machine's state at the table's resolution: State()
// says "reloading" for both halves of a reload; an Exec tells them apart.
func substate(coarse, before string, acts []fsm.Action) string {
	switch coarse {
	case "running":
		return "Running"
	case "exiting":
		return "Exiting"
	case "exited":
		return "Exited"
	case "idle":
		return "Idle"
	case "reloading":
		for _, a := range acts {
			if _, ok := a.(fsm.Exec); ok {
				return "ExecPending"
			}
		}
		if before == "ExecPending" {
			return "ExecPending"
		}
		return "AwaitingReady"
	}
	return coarse
}

// outcome is one cell group of a table row.
type outcome struct {
	actions, logs, next string
}

type result struct {
	event string
	now   outcome
	after *outcome // ExecPending only: after a following ExecFailed
}

func (s *scene) run(r row) (result, error) {
	m, err := s.start(r.config)
	if err != nil {
		return result{}, err
	}
	setup, ev, note, ok := r.make(s)
	res := result{event: r.label}
	if !ok {
		res.now = outcome{actions: "n/a: " + note}
		return res, nil
	}
	m.feed(setup...)
	if m.sub != s.sub {
		return result{}, fmt.Errorf("gendocs: scene %s, row %q: the setup left the machine in %s", s.sub, r.label, m.sub)
	}
	if note != "" {
		res.event += ", " + note
	}
	if tf, ok := ev.(fsm.TimerFired); ok && !m.armed[tf.Timer] {
		res.event += " — not armed in this state"
	}
	before := m.sub
	res.now = s.describe(m.feed(ev), m.sub, before)
	if s.sub == "ExecPending" {
		if _, isFail := ev.(fsm.ExecFailed); !isFail {
			o := s.describe(m.feed(fsm.ExecFailed{Err: "permission denied"}), m.sub, "")
			res.after = &o
		}
	}
	return res, nil
}

func (s *scene) describe(acts []fsm.Action, next, before string) outcome {
	var as, ls []string
	var counts []int // consecutive repeats of as[i], drawn as "×n"
	for _, a := range acts {
		if l, ok := a.(fsm.Log); ok {
			ls = append(ls, l.Level.String()+": "+l.Msg)
			continue
		}
		txt := s.action(a)
		if n := len(as); n > 0 && as[n-1] == txt {
			counts[n-1]++
			continue
		}
		as, counts = append(as, txt), append(counts, 1)
	}
	for i, n := range counts {
		if n > 1 {
			as[i] += " ×" + strconv.Itoa(n)
		}
	}
	o := outcome{actions: strings.Join(as, "; "), logs: strings.Join(ls, "; "), next: next}
	if o.actions == "" {
		o.actions = "—"
	}
	if o.logs == "" {
		o.logs = "—"
	}
	if next == before {
		o.next = next + " (same)"
	}
	return o
}

func (s *scene) roles(pids []int) string {
	var out []string
	for _, p := range pids {
		if r := s.role(p); !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return strings.Join(out, "+")
}

func signalName(sig fsm.Signal) string {
	if sig == stopSignal {
		return "stop-signal"
	}
	return sig.String()
}

func (s *scene) genRole(g int) string {
	if r, ok := s.gens[g]; ok {
		return r
	}
	return "generation " + strconv.Itoa(g)
}

func (s *scene) timer(t fsm.Timer) string {
	switch t.Kind {
	case fsm.TimerRestart:
		return "restart " + s.genRole(t.Generation) + " slot " + strconv.Itoa(t.Slot)
	case fsm.TimerStable, fsm.TimerReadyAfter:
		return t.Kind.String() + " " + s.role(t.Pid)
	case fsm.TimerReadyTimeout, fsm.TimerKill:
		return t.Kind.String() + " " + s.genRole(t.Generation)
	}
	return t.Kind.String()
}

func (s *scene) action(a fsm.Action) string {
	switch a := a.(type) {
	case fsm.Spawn:
		return "Spawn " + s.genRole(a.Generation) + " slot " + strconv.Itoa(a.Slot)
	case fsm.Kill:
		return "Kill " + signalName(a.Signal) + " → " + s.roles(a.Pids)
	case fsm.SignalPids:
		return "SignalPids " + signalName(a.Signal) + " → " + s.roles(a.Pids)
	case fsm.Exec:
		return "Exec -sf " + s.roles(sfList(a.Argv))
	case fsm.Exit:
		return "Exit " + strconv.Itoa(a.Status)
	case fsm.SetTimer:
		return "SetTimer " + s.timer(a.Timer) + " " + a.After.String()
	case fsm.CancelTimer:
		return "CancelTimer " + s.timer(a.Timer)
	case fsm.Notify:
		if a.Status != "" {
			return "Notify " + a.State.String() + " (" + a.Status + ")"
		}
		return "Notify " + a.State.String()
	case fsm.Reply:
		id := "Reply #" + strconv.FormatUint(uint64(a.ID), 10)
		switch {
		case a.Status != nil:
			return id + " ok + status"
		case a.OK:
			return id + " ok"
		}
		return id + " error (" + a.Error + ")"
	}
	return a.String()
}

// sfList returns the pids of the "-sf" list before "--".
func sfList(argv []string) []int {
	var pids []int
	in := false
	for _, a := range argv[1:] {
		if a == "--" {
			break
		}
		if a == "-sf" {
			in = true
			continue
		}
		n, err := strconv.Atoi(a)
		if in && err == nil {
			pids = append(pids, n)
			continue
		}
		in = false
	}
	return pids
}

var routeMeaning = map[fsm.Route]string{
	fsm.RouteReload:    "reload: re-exec the master, start a new generation, stop the old one once it is ready",
	fsm.RouteSoftStop:  "soft stop: send --stop-signal to every worker, exit when all are gone",
	fsm.RouteTerminate: "terminate: forward the same signal to every worker, current and old, exit when all are gone",
	fsm.RouteForward:   "forwarded to the current workers",
	fsm.RouteIgnore:    "not forwarded",
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "<", "&lt;")
	return strings.ReplaceAll(s, "\n", " ")
}

// Semantics returns docs/semantics.md.
func Semantics() (string, error) {
	var b strings.Builder
	b.WriteString(intro)

	b.WriteString("## Signals sent to the master\n\n")
	b.WriteString("From `fsm.RouteOf` and `fsm.CatchableSignals` (real-time signals 34..64 are forwarded too).\n\n")
	b.WriteString("| # | signal | route | what the master does | subscribed |\n|---|---|---|---|---|\n")
	catchable := fsm.CatchableSignals()
	for sig := fsm.Signal(1); sig <= 31; sig++ {
		r := fsm.RouteOf(sig)
		meaning, ok := routeMeaning[r]
		if !ok {
			return "", fmt.Errorf("gendocs: route %s of signal %s has no description: add it to routeMeaning in internal/gendocs/semantics.go", r, sig)
		}
		sub := "no"
		if slices.Contains(catchable, sig) {
			sub = "yes"
		}
		if sig == fsm.SIGCHLD {
			meaning = "not forwarded: it drives the reaper (wait4 loop)"
		}
		fmt.Fprintf(&b, "| %d | SIG%s | %s | %s | %s |\n", int(sig), sig, r, cell(meaning), sub)
	}
	b.WriteString("\n")

	for _, s := range scenes() {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", s.title, s.about)
		cols := 4
		if s.sub == "ExecPending" {
			cols = 5
			b.WriteString("| event | now | after a following ExecFailed: actions | log | next state |\n|---|---|---|---|---|\n")
		} else {
			b.WriteString("| event | actions | log | next state |\n|---|---|---|---|\n")
		}
		for _, r := range rows() {
			res, err := s.run(r)
			if err != nil {
				return "", err
			}
			if strings.HasPrefix(res.now.actions, "n/a") {
				fmt.Fprintf(&b, "| %s | %s |%s\n", cell(res.event), cell(res.now.actions), strings.Repeat(" |", cols-2))
				continue
			}
			if s.sub == "ExecPending" {
				now := res.now.actions
				if res.after == nil {
					fmt.Fprintf(&b, "| %s | %s | — | %s | %s |\n", cell(res.event), cell(now), cell(res.now.logs), cell(res.now.next))
					continue
				}
				if now == "—" {
					now = "held"
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(res.event), cell(now), cell(res.after.actions), cell(res.after.logs), cell(res.after.next))
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(res.event), cell(res.now.actions), cell(res.now.logs), cell(res.now.next))
		}
		b.WriteString("\n")
	}
	return b.String(), nil
}

const intro = `# mworker: what the master does, state by state

<!-- Generated by internal/gendocs from the fsm package; do not edit.
     Regenerate with: go generate ./fsm -->

The master's decisions are made by one state machine, ` + "`fsm.Machine`" + `:
events in (a signal, a child that exited, a timer, a control request),
actions out (spawn, kill, exec, exit, notify, reply). Everything below was
produced by driving real machines, so it is what the code does, not what
someone meant it to do.

![state diagram](fsm.svg)

The diagram is drawn from the transition table ([DOT source](fsm.dot)).
Internal transitions are listed by event only: the tables below say what
they do.

**States.** *Running* serves one generation of workers. *Reloading* has two
halves: *ExecPending* in the old image (Exec emitted, waiting for the
process image to be replaced or for ExecFailed) and *AwaitingReady* in the
new image (the new generation starts; the old one keeps serving until every
new worker is ready). *Exiting*: every worker was told to stop; the master
exits once the last one is reaped. *Exited*: Exit was emitted.

**How to read the tables.** The machine runs as
` + "`mworker run -n 2 --ready notify --stop-signal QUIT --restart always`" + `
(stop timeout 10s, ready timeout 30s). *stop-signal* is the
` + "`--stop-signal`" + ` (TERM by default). Workers are named by their role:
*current* is the serving generation, *old* a previous generation already
told to stop, *new* the generation a reload is readying, *unknown* a child
the master never started (an orphan reparented to it). Roles are those
before the event. Kill goes to each worker's process group. "Not armed" marks a timer the machine had not set
(it fires only if the adapter failed to cancel it); *n/a* marks an event
that cannot happen in that state. Log lines are what the operator sees on
stderr.

`
