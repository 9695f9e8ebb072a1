package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/mworker/mworker/fsm"
)

// docs/semantics.md is found, not written: for each state, a real machine
// is driven there by a fixed prefix script, and every kind of event is fed
// to a fresh copy of it (the prefix replayed on a new machine). The table
// records the actions that came out and the state the machine ended in.

// machine replays the scene's prefix on a fresh machine and tracks which
// timers are armed.
type machine struct {
	*fsm.Machine
	s     *scene
	armed map[fsm.Timer]bool
	sub   string
}

// start replays prefix, or the scene's own when nil, on a fresh machine
// built from the scene's config as changed by config.
func (s *scene) start(config func(*fsm.Config), prefix []fsm.Event) (*machine, error) {
	if prefix == nil {
		prefix = s.prefix
	}
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
	mm.feed(prefix...)
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
	f, ok := r.make(s)
	res := result{event: r.label}
	if !ok {
		res.now = outcome{actions: "n/a: " + f.note}
		return res, nil
	}
	m, err := s.start(r.config, f.prefix)
	if err != nil {
		return result{}, err
	}
	m.feed(f.setup...)
	if m.sub != s.sub {
		return result{}, fmt.Errorf("gendocs: scene %s, row %q: the setup left the machine in %s", s.sub, r.label, m.sub)
	}
	ev := f.ev
	if f.note != "" {
		res.event += ", " + f.note
	}
	if tf, ok := ev.(fsm.TimerFired); ok && !m.armed[tf.Timer] {
		res.event += " — not armed in this state"
	}
	before := m.sub
	res.now = s.describe(m.feed(ev), m.sub, before)
	if s.sub == "ExecPending" {
		if _, isFail := ev.(fsm.ExecFailed); !isFail {
			base, err := s.execFailedAlone()
			if err != nil {
				return result{}, err
			}
			acts := m.feed(execFailed)
			if !hasPrefix(acts, base) {
				return result{}, fmt.Errorf("gendocs: scene %s, row %q: ExecFailed did not begin with what it does alone; the table cannot show the replay apart", s.sub, r.label)
			}
			o := s.describe(acts[len(base):], m.sub, "")
			res.after = &o
		}
	}
	return res, nil
}

var execFailed = fsm.ExecFailed{Err: "permission denied"}

// execFailedAlone returns what ExecFailed does with nothing held, so that
// the rows show only what the replay of their held event adds.
func (s *scene) execFailedAlone() ([]fsm.Action, error) {
	m, err := s.start(nil, nil)
	if err != nil {
		return nil, err
	}
	return m.feed(execFailed), nil
}

func hasPrefix(acts, prefix []fsm.Action) bool {
	if len(acts) < len(prefix) {
		return false
	}
	for i, a := range prefix {
		if a.String() != acts[i].String() {
			return false
		}
	}
	return true
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
	case fsm.StopListening:
		return "StopListening"
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
	b.WriteString("From `fsm.RouteOf` and `fsm.CatchableSignals` (signal 32 and real-time signals 34..64 are forwarded too; 33 is the Go runtime's own).\n\n")
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
			b.WriteString("| event | now | replayed after ExecFailed: actions | log | next state |\n|---|---|---|---|---|\n")
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
