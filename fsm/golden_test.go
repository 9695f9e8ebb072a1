package fsm

// Golden scenarios: testdata/*.txt are event scripts with the actions the
// machine answered, in the spirit of etcd raft's datadriven tests. A change
// of behaviour shows up as a readable diff of these files. Rewrite them with
//
//	go test ./fsm -run Golden -update
//
// and commit the changes only if you understand what caused them.
//
// # File format
//
// A file starts with a header of "key: value" lines that configures the
// machine, ended by the first blank line. Keys (all optional):
//
//	workers: 2                 Config.Workers (default 1)
//	restart: always            --restart: always, on-failure, no (default always)
//	reexec: upgrade            --reexec: always, upgrade, never (default always)
//	ready: notify              --ready: immediate, notify, or a duration (default immediate)
//	ready-timeout: 30s         (default 30s)
//	stop-signal: TERM          (default TERM)
//	stop-timeout: 10s          (default 10s)
//	backoff: 100ms 30s 60s     Backoff Min Max Reset (default DefaultBackoff)
//	seed: 42                   Config.Seed: jittered restart delays (default 0: none)
//	restart-limit: 3/10s       --restart-limit N/WINDOW (default off)
//	max-old-generations: 1     Config.MaxOldGenerations (default 0: no cap; -1: NoOldGenerations)
//	batch: 2                   Config.Batch: rolling reloads (default 0: the whole generation)
//	success-exit: 143 1        Config.SuccessExit: statuses that count as 0
//	watchdog: 2s               Config.Watchdog (default 0: none)
//	shutdown-delay: 5s         Config.ShutdownDelay (default 0: none)
//	path: /usr/sbin/mworker    Config.Path (default /usr/bin/mworker)
//	argv: mworker run -- srv   Config.Argv, split on spaces (default "mworker run -- server")
//	caller: lax                allow scripts that break the caller's duties
//
// The -sf/-st lists of the argv (before "--") become Config.StopPids and
// Config.TermPids, as the command line would parse them. A header may also
// describe the handover of a previous image (Config.Resume):
//
//	resume: gen=1 max=1 reloads=0 failed=0 exit=0 announced
//	resume-worker: pid=101 gen=1 slot=0 ready stopping   (repeatable; "leaving": stopping on its own;
//	                                                      "replacing": stopped by the watchdog)
//	resume-timer: kill gen=1                              (repeatable; Timer.String form)
//	resume-request: 7                                     (repeatable)
//	resume-failures: 0 3
//	resume-size: 4                                        (Handover.Size)
//	resume-sf: 900 901
//	resume-st: 902
//
// Then come blocks. A block is one line, a "----" line, and the output up
// to the next blank line. Lines starting with "#" between blocks are
// comments and are kept. The line is either an event, written exactly as
// its String() prints it:
//
//	start
//	signal USR2
//	started gen=1 slot=0 pid=101
//	spawn-failed gen=1 slot=0 status=exit:127 err="no such file"
//	ready pid=101
//	watchdog pid=101                      (WATCHDOG=1; "watchdog pid=101 trigger": WATCHDOG=trigger)
//	exited pid=101 status=exit:3          (or status=signal:KILL)
//	no-children
//	exec-failed err="permission denied"
//	image changed=true                    (or changed=false)
//	timer restart gen=1 slot=0            (any Timer.String form)
//	control id=1 reload                   (reload, stop, status, or command(N))
//	control id=2 scale arg="4"            (a command with its argument)
//
// or the directive "reexec": the caller's half of an Exec. It builds a new
// machine from the last Exec action, as the new image would: Argv is the
// exec's argv (its -sf/-st lists parsed as above), Resume is the exec's
// Handover, the rest of the header is unchanged. Its output describes the
// handover; the next event is usually "start".
//
// An event's output is the String() of each action it produced, in order,
// then a "state:" line: the machine's internal state and its status.
//
// A script plays a correct caller (doc.go): after a Spawn, the next events
// are the spawn outcomes, in order; after an Exec, only exec-failed or
// reexec; a timer fires only while armed (by SetTimer, or by the handover
// of a resumed machine), and once. The test fails on a script that does
// otherwise, unless its header says "caller: lax" (bad-events.txt shows
// what the machine does with such a caller).

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actual output")

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scenario in testdata/*.txt")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runGolden(t, file)
		})
	}
}

// goldenBlock is one event (or directive) of a scenario and its output.
type goldenBlock struct {
	comments []string
	line     int // line number of the event, for messages
	input    string
	want     string
}

func runGolden(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	header, blocks, trailer, err := parseGolden(string(data))
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	cfg, err := goldenConfig(header)
	if err != nil {
		t.Fatalf("%s: header: %v", file, err)
	}
	d := &goldenDriver{t: t, base: cfg, lax: slices.Contains(header, "caller: lax")}
	d.m, err = New(cfg)
	if err != nil {
		t.Fatalf("%s: New: %v", file, err)
	}
	d.armAll(cfg.Resume)

	var out strings.Builder
	for _, h := range header {
		out.WriteString(h + "\n")
	}
	for _, b := range blocks {
		out.WriteString("\n")
		for _, c := range b.comments {
			out.WriteString(c + "\n")
		}
		got := d.run(fmt.Sprintf("%s:%d", file, b.line), b.input)
		out.WriteString(b.input + "\n----\n" + got)
		if !*update && got != b.want {
			t.Errorf("%s:%d: %s\n--- got\n%s--- want\n%s", file, b.line, b.input, got, b.want)
		}
	}
	for _, c := range trailer {
		out.WriteString("\n" + c)
	}
	if len(trailer) > 0 {
		out.WriteString("\n")
	}
	if *update && out.String() != string(data) {
		if err := os.WriteFile(file, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", file)
	}
}

// parseGolden splits a scenario into its header lines, its blocks and the
// comments after the last block.
func parseGolden(s string) (header []string, blocks []goldenBlock, trailer []string, err error) {
	sc := bufio.NewScanner(strings.NewReader(s))
	n := 0
	next := func() (string, bool) {
		if !sc.Scan() {
			return "", false
		}
		n++
		return sc.Text(), true
	}
	for {
		l, ok := next()
		if !ok || l == "" {
			break
		}
		header = append(header, l)
	}
	var comments []string
	for {
		l, ok := next()
		if !ok {
			break
		}
		switch {
		case l == "":
			continue
		case strings.HasPrefix(l, "#"):
			comments = append(comments, l)
			continue
		}
		b := goldenBlock{comments: comments, line: n, input: l}
		comments = nil
		if sep, ok := next(); !ok || sep != "----" {
			return nil, nil, nil, fmt.Errorf("line %d: %q must be followed by a ---- line", b.line, l)
		}
		var want strings.Builder
		for {
			l, ok := next()
			if !ok || l == "" {
				break
			}
			want.WriteString(l + "\n")
		}
		b.want = want.String()
		blocks = append(blocks, b)
	}
	return header, blocks, comments, sc.Err()
}

func goldenConfig(header []string) (Config, error) {
	cfg := Config{
		Workers:      1,
		Path:         "/usr/bin/mworker",
		Argv:         strings.Fields("mworker run -- server"),
		ReadyTimeout: 30 * time.Second,
		StopSignal:   SIGTERM,
		StopTimeout:  10 * time.Second,
	}
	var h *Handover
	resume := func() *Handover {
		if h == nil {
			h = &Handover{}
		}
		return h
	}
	for _, l := range header {
		if strings.HasPrefix(l, "#") {
			continue
		}
		key, val, ok := strings.Cut(l, ":")
		if !ok {
			return cfg, fmt.Errorf("%q is not a key: value line", l)
		}
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "workers":
			cfg.Workers, err = strconv.Atoi(val)
		case "restart":
			cfg.Restart, err = ParseRestartPolicy(val)
		case "reexec":
			cfg.Reexec, err = ParseReexecPolicy(val)
		case "ready":
			cfg.Ready, err = ParseReadyMode(val)
		case "ready-timeout":
			cfg.ReadyTimeout, err = time.ParseDuration(val)
		case "stop-signal":
			cfg.StopSignal, err = ParseSignal(val)
		case "stop-timeout":
			cfg.StopTimeout, err = time.ParseDuration(val)
		case "backoff":
			var ds []time.Duration
			for _, f := range strings.Fields(val) {
				d, e := time.ParseDuration(f)
				if e != nil {
					return cfg, e
				}
				ds = append(ds, d)
			}
			if len(ds) != 3 {
				return cfg, fmt.Errorf("backoff %q: want MIN MAX RESET", val)
			}
			cfg.Backoff = Backoff{Min: ds[0], Max: ds[1], Reset: ds[2]}
		case "seed":
			cfg.Seed, err = strconv.ParseUint(val, 10, 64)
		case "restart-limit":
			cfg.RestartLimit, err = ParseRestartLimit(val)
		case "max-old-generations":
			cfg.MaxOldGenerations, err = strconv.Atoi(val)
		case "batch":
			cfg.Batch, err = strconv.Atoi(val)
		case "success-exit":
			cfg.SuccessExit, err = parseInts(val)
		case "watchdog":
			cfg.Watchdog, err = time.ParseDuration(val)
		case "shutdown-delay":
			cfg.ShutdownDelay, err = time.ParseDuration(val)
		case "path":
			cfg.Path = val
		case "argv":
			cfg.Argv = strings.Fields(val)
		case "caller":
			if val != "lax" {
				err = fmt.Errorf("%q: the only value is lax", val)
			}
		case "resume":
			r := resume()
			for _, f := range strings.Fields(val) {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "gen":
					r.Generation, err = strconv.Atoi(v)
				case "max":
					r.MaxGeneration, err = strconv.Atoi(v)
				case "reloads":
					r.Reloads, err = strconv.Atoi(v)
				case "failed":
					r.FailedReloads, err = strconv.Atoi(v)
				case "exit":
					r.ExitStatus, err = strconv.Atoi(v)
				case "announced":
					r.Announced = true
				default:
					err = fmt.Errorf("unknown resume field %q", f)
				}
				if err != nil {
					return cfg, err
				}
			}
		case "resume-worker":
			var w HandoverWorker
			for _, f := range strings.Fields(val) {
				k, v, _ := strings.Cut(f, "=")
				switch k {
				case "pid":
					w.Pid, err = strconv.Atoi(v)
				case "gen":
					w.Generation, err = strconv.Atoi(v)
				case "slot":
					w.Slot, err = strconv.Atoi(v)
				case "ready":
					w.Ready = true
				case "stopping":
					w.Stopping = true
				case "leaving":
					w.Stopping, w.Leaving = true, true
				case "replacing":
					w.Replacing = true
				default:
					err = fmt.Errorf("unknown resume-worker field %q", f)
				}
				if err != nil {
					return cfg, err
				}
			}
			resume().Workers = append(resume().Workers, w)
		case "resume-timer":
			var tm Timer
			tm, err = parseTimer(val)
			resume().Timers = append(resume().Timers, tm)
		case "resume-request":
			var id uint64
			id, err = strconv.ParseUint(val, 10, 64)
			resume().Requests = append(resume().Requests, RequestID(id))
		case "resume-failures":
			resume().Failures, err = parseInts(val)
		case "resume-size":
			resume().Size, err = strconv.Atoi(val)
		case "resume-sf":
			resume().StopPids, err = parseInts(val)
		case "resume-st":
			resume().TermPids, err = parseInts(val)
		default:
			return cfg, fmt.Errorf("unknown key %q", key)
		}
		if err != nil {
			return cfg, fmt.Errorf("%s: %w", key, err)
		}
	}
	cfg.StopPids, cfg.TermPids = argvPids(cfg.Argv)
	cfg.Resume = h
	return cfg, nil
}

// argvPids parses the -sf and -st lists of mworker's own options (before
// "--") as the command line does: the positive integers after the word.
func argvPids(argv []string) (sf, st []int) {
	var list *[]int
	for _, a := range argv[min(1, len(argv)):] {
		if a == "--" {
			break
		}
		switch a {
		case "-sf":
			list = &sf
			continue
		case "-st":
			list = &st
			continue
		}
		if p, err := strconv.Atoi(a); err == nil && list != nil {
			if p > 0 {
				*list = append(*list, p)
			}
			continue
		}
		list = nil
	}
	return sf, st
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// fields parses "k=v" words into a map; a word without "=" maps to "".
func fields(words []string) map[string]string {
	kv := make(map[string]string)
	for _, w := range words {
		k, v, _ := strings.Cut(w, "=")
		kv[k] = v
	}
	return kv
}

func atoi(kv map[string]string, key string) (int, error) {
	v, ok := kv[key]
	if !ok {
		return 0, fmt.Errorf("missing %s=", key)
	}
	return strconv.Atoi(v)
}

func parseTimer(s string) (Timer, error) {
	words := strings.Fields(s)
	if len(words) == 0 {
		return Timer{}, fmt.Errorf("empty timer")
	}
	var t Timer
	for k, name := range timerKindNames {
		if name != "" && name == words[0] {
			t.Kind = TimerKind(k)
		}
	}
	kv := fields(words[1:])
	var err error
	switch t.Kind {
	case TimerRestart, TimerRestartWindow:
		if t.Generation, err = atoi(kv, "gen"); err == nil {
			t.Slot, err = atoi(kv, "slot")
		}
	case TimerStable, TimerReadyAfter, TimerQuick, TimerKillWorker, TimerWatchdog:
		t.Pid, err = atoi(kv, "pid")
	case TimerReadyTimeout, TimerKill:
		t.Generation, err = atoi(kv, "gen")
	case TimerKillAll, TimerShutdownDelay:
	default:
		err = fmt.Errorf("unknown timer kind %q", words[0])
	}
	return t, err
}

func parseStatus(s string) (ExitStatus, error) {
	kind, v, _ := strings.Cut(s, ":")
	switch kind {
	case "exit":
		n, err := strconv.Atoi(v)
		return ExitStatus{Code: n}, err
	case "signal":
		sig, err := ParseSignal(v)
		return ExitStatus{Signal: sig}, err
	}
	return ExitStatus{}, fmt.Errorf("status %q: use exit:N or signal:NAME", s)
}

// parseEvent reads an event written in its String() form.
func parseEvent(line string) (Event, error) {
	words := strings.Fields(line)
	kv := fields(words[1:])
	var err error
	switch words[0] {
	case "start":
		return Start{}, nil
	case "signal":
		if len(words) == 3 && words[2] == "hangup" {
			sig, err := ParseSignal(words[1])
			return SignalReceived{Signal: sig, HangUp: true}, err
		}
		if len(words) != 2 {
			return nil, fmt.Errorf("want: signal NAME [hangup]")
		}
		sig, err := ParseSignal(words[1])
		return SignalReceived{Signal: sig}, err
	case "started":
		var e WorkerStarted
		if e.Generation, err = atoi(kv, "gen"); err != nil {
			return nil, err
		}
		if e.Slot, err = atoi(kv, "slot"); err != nil {
			return nil, err
		}
		e.Pid, err = atoi(kv, "pid")
		return e, err
	case "spawn-failed":
		var e SpawnFailed
		if e.Generation, err = atoi(kv, "gen"); err != nil {
			return nil, err
		}
		if e.Slot, err = atoi(kv, "slot"); err != nil {
			return nil, err
		}
		if e.Status, err = parseStatus(kv["status"]); err != nil {
			return nil, err
		}
		_, q, _ := strings.Cut(line, " err=")
		e.Err, err = strconv.Unquote(q)
		return e, err
	case "ready":
		var e WorkerReady
		e.Pid, err = atoi(kv, "pid")
		return e, err
	case "watchdog":
		var e WorkerWatchdog
		e.Pid, err = atoi(kv, "pid")
		_, e.Trigger = kv["trigger"]
		return e, err
	case "exited":
		var e ChildExited
		if e.Pid, err = atoi(kv, "pid"); err != nil {
			return nil, err
		}
		e.Status, err = parseStatus(kv["status"])
		return e, err
	case "no-children":
		return NoChildren{}, nil
	case "exec-failed":
		_, q, _ := strings.Cut(line, " err=")
		msg, err := strconv.Unquote(q)
		return ExecFailed{Err: msg}, err
	case "image":
		changed, err := strconv.ParseBool(kv["changed"])
		return ImageChanged{Changed: changed}, err
	case "timer":
		tm, err := parseTimer(strings.TrimPrefix(line, "timer "))
		return TimerFired{Timer: tm}, err
	case "control":
		var arg, from string
		if i := strings.Index(line, " from="); i >= 0 {
			f, err := strconv.Unquote(line[i+len(" from="):])
			if err != nil {
				return nil, fmt.Errorf("control from: %w", err)
			}
			from, line = f, line[:i]
			words = strings.Fields(line)
		}
		if i := strings.Index(line, " arg="); i >= 0 {
			a, err := strconv.Unquote(line[i+len(" arg="):])
			if err != nil {
				return nil, fmt.Errorf("control arg: %w", err)
			}
			arg = a
			words = strings.Fields(line[:i])
		}
		if len(words) != 3 {
			return nil, fmt.Errorf("want: control id=N COMMAND [arg=\"ARG\"]")
		}
		id, err := strconv.ParseUint(kv["id"], 10, 64)
		if err != nil {
			return nil, err
		}
		cmd, ok := ParseCommand(words[2])
		if !ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(words[2], "command("), ")"))
			if err != nil {
				return nil, fmt.Errorf("unknown command %q", words[2])
			}
			cmd = Command(n)
		}
		return ControlRequest{ID: RequestID(id), Command: cmd, Arg: arg, From: from}, nil
	}
	return nil, fmt.Errorf("unknown event %q", words[0])
}

// goldenDriver plays the caller: it steps the machine and checks the few
// duties of doc.go that a single trace can show.
type goldenDriver struct {
	t        *testing.T
	base     Config
	m        *Machine
	lastExec *Exec
	exited   bool
	lax      bool     // the script may break the caller's duties
	spawns   [][2]int // (generation, slot) of Spawns awaiting their outcome
	execing  bool     // an Exec awaits exec-failed or reexec
	armed    map[Timer]bool
}

// checkDuties fails a script that feeds ev where a correct caller would
// not, and keeps track of the outcomes it owes.
func (d *goldenDriver) checkDuties(where string, ev Event) {
	var outcome [2]int
	isOutcome := false
	switch e := ev.(type) {
	case WorkerStarted:
		outcome, isOutcome = [2]int{e.Generation, e.Slot}, true
	case SpawnFailed:
		outcome, isOutcome = [2]int{e.Generation, e.Slot}, true
	}
	_, isExecFailed := ev.(ExecFailed)
	tf, isTimer := ev.(TimerFired)
	switch {
	case d.lax:
	case isTimer && !d.armed[tf.Timer]:
		d.t.Errorf("%s: %q fired but not armed (or add caller: lax)", where, ev)
	case d.execing && !isExecFailed:
		d.t.Errorf("%s: %q fed after an Exec: only exec-failed or reexec may follow (or add caller: lax)", where, ev)
	case len(d.spawns) > 0 && (!isOutcome || outcome != d.spawns[0]):
		d.t.Errorf("%s: %q fed while spawn gen=%d slot=%d awaits its outcome (or add caller: lax)", where, ev, d.spawns[0][0], d.spawns[0][1])
	}
	if isOutcome && len(d.spawns) > 0 && outcome == d.spawns[0] {
		d.spawns = d.spawns[1:]
	}
	if isExecFailed {
		d.execing = false
	}
	if isTimer {
		delete(d.armed, tf.Timer)
	}
}

// armAll records the timers a new machine starts with.
func (d *goldenDriver) armAll(h *Handover) {
	d.armed = make(map[Timer]bool)
	if h != nil {
		for _, t := range h.Timers {
			d.armed[t] = true
		}
	}
}

func (d *goldenDriver) run(where, input string) string {
	if input == "reexec" {
		return d.reexec(where)
	}
	ev, err := parseEvent(input)
	if err != nil {
		d.t.Fatalf("%s: %q: %v", where, input, err)
	}
	if ev.String() != input {
		d.t.Fatalf("%s: write the event as %q", where, ev.String())
	}
	d.checkDuties(where, ev)
	acts := d.m.Step(ev)
	var b strings.Builder
	for i, a := range acts {
		b.WriteString(a.String() + "\n")
		last := i == len(acts)-1
		switch a := a.(type) {
		case Spawn:
			d.spawns = append(d.spawns, [2]int{a.Generation, a.Slot})
		case SetTimer:
			d.armed[a.Timer] = true
		case CancelTimer:
			delete(d.armed, a.Timer)
		case Exec:
			d.lastExec = &a
			d.execing = true
			if !last {
				d.t.Errorf("%s: Exec is not the last action of its step", where)
			}
		case Exit:
			if !last {
				d.t.Errorf("%s: Exit is not the last action of its step", where)
			}
		case Kill:
			if len(a.Pids) == 0 || slices.ContainsFunc(a.Pids, func(p int) bool { return p <= 0 }) {
				d.t.Errorf("%s: %v targets no pid or a pid <= 0", where, a)
			}
		}
	}
	if d.exited && len(acts) > 0 {
		d.t.Errorf("%s: actions after Exit", where)
	}
	if len(acts) > 0 {
		_, d.exited = acts[len(acts)-1].(Exit)
		d.exited = d.exited || d.m.state == stateExited
	}
	// Status prints "state=reloading gen=..."; show the precise sub-state.
	_, rest, _ := strings.Cut(d.m.status().String(), " ")
	b.WriteString("state: " + d.m.state.String() + " " + rest + "\n")
	return b.String()
}

// reexec builds the machine of the new image from the last Exec.
func (d *goldenDriver) reexec(where string) string {
	if d.lastExec == nil {
		d.t.Fatalf("%s: reexec without an Exec", where)
	}
	e := d.lastExec
	d.lastExec = nil
	cfg := d.base
	cfg.Argv = slices.Clone(e.Argv)
	cfg.StopPids, cfg.TermPids = argvPids(e.Argv)
	h := e.Handover
	cfg.Resume = &h
	m, err := New(cfg)
	if err != nil {
		d.t.Fatalf("%s: New for the new image: %v", where, err)
	}
	d.m = m
	d.execing, d.spawns = false, nil
	d.armAll(&h)
	var b strings.Builder
	fmt.Fprintf(&b, "new image: sf=%v st=%v\n", cfg.StopPids, cfg.TermPids)
	fmt.Fprintf(&b, "handover: gen=%d max=%d reloads=%d failed=%d exit=%d announced=%t requests=%v failures=%v sf=%v st=%v\n",
		h.Generation, h.MaxGeneration, h.Reloads, h.FailedReloads, h.ExitStatus, h.Announced, h.Requests, h.Failures, h.StopPids, h.TermPids)
	if h.LimitCounts != nil && d.base.RestartLimit.Count > 0 {
		fmt.Fprintf(&b, "handover restart-limit counts: %v\n", h.LimitCounts)
	}
	if h.Size != d.base.Workers {
		fmt.Fprintf(&b, "handover size: %d\n", h.Size)
	}
	for _, w := range h.Workers {
		leaving := ""
		if w.Leaving {
			leaving = " leaving"
		}
		if w.Home != 0 {
			leaving += fmt.Sprintf(" home=%d", w.Home)
		}
		if w.Replacing {
			leaving += " replacing"
		}
		fmt.Fprintf(&b, "handover worker: pid=%d gen=%d slot=%d ready=%t stopping=%t%s\n", w.Pid, w.Generation, w.Slot, w.Ready, w.Stopping, leaving)
	}
	for _, tm := range h.Timers {
		fmt.Fprintf(&b, "handover timer: %s\n", tm)
	}
	return b.String()
}
