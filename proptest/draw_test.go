package proptest

import (
	"slices"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
	"pgregory.net/rapid"
)

func drawConfig(t *rapid.T) fsm.Config {
	argvs := [][]string{
		{"mworker", "run", "--", "srv"},
		{"mworker", "run", "-n", "3", "-sf", "11", "12", "--", "srv", "-sf", "1", "--"},
		{"mworker", "run", "-st", "-1", "--stop-signal", "QUIT", "--", "sh", "-c", "srv -st 5"},
		{"mworker", "run", "/sf", "-sfx", "-stop-signal", "TERM", "-sf"},
		{"mworker", "-sf", "--", "-sf", "7"},
	}
	cfg := fsm.Config{
		Workers:      rapid.IntRange(1, 8).Draw(t, "workers"),
		Path:         "/usr/local/bin/mworker",
		Argv:         rapid.SampledFrom(argvs).Draw(t, "argv"),
		ReadyTimeout: 30 * time.Second,
		StopTimeout:  10 * time.Second,
		StopSignal:   rapid.SampledFrom([]fsm.Signal{fsm.SIGTERM, fsm.SIGINT, fsm.SIGQUIT, fsm.SIGUSR1, fsm.SIGHUP, fsm.SIGWINCH, 40}).Draw(t, "stopSignal"),
		Restart:      rapid.SampledFrom([]fsm.RestartPolicy{fsm.RestartAlways, fsm.RestartOnFailure, fsm.RestartNo}).Draw(t, "restart"),
		Reexec:       rapid.SampledFrom([]fsm.ReexecPolicy{fsm.ReexecAlways, fsm.ReexecOnUpgrade, fsm.ReexecNever}).Draw(t, "reexec"),
	}
	switch rapid.IntRange(0, 2).Draw(t, "ready") {
	case 1:
		cfg.Ready = fsm.ReadyMode{Kind: fsm.ReadyNotify}
	case 2:
		// A duration, as the command line's default is one.
		cfg.Ready = fsm.DefaultReady
	}
	if rapid.IntRange(0, 3).Draw(t, "backoff") == 0 {
		cfg.Backoff = fsm.Backoff{Min: time.Second, Max: 5 * time.Second, Reset: 10 * time.Second}
	}
	if rapid.Bool().Draw(t, "jitter") {
		cfg.Seed = rapid.Uint64Min(1).Draw(t, "seed")
	}
	if rapid.IntRange(0, 2).Draw(t, "restartLimit") == 0 {
		cfg.RestartLimit = fsm.RestartLimit{Count: rapid.IntRange(1, 4).Draw(t, "limitCount"), Window: time.Minute}
	}
	// Mostly no cap, as before it existed; else a small one that reloads
	// reach, NoOldGenerations included.
	if rapid.IntRange(0, 2).Draw(t, "capDrains") == 0 {
		cfg.MaxOldGenerations = rapid.IntRange(fsm.NoOldGenerations, 2).Draw(t, "maxOldGenerations")
	}
	// Sometimes statuses that count as success (--success-exit).
	if rapid.IntRange(0, 3).Draw(t, "successExit") == 0 {
		cfg.SuccessExit = []int{143, 1}
	}
	// Sometimes a shutdown delay: the first stop is held (--shutdown-delay).
	if rapid.IntRange(0, 3).Draw(t, "shutdownDelay") == 0 {
		cfg.ShutdownDelay = 5 * time.Second
	}
	// Mostly whole generations; sometimes rolling reloads of 1 or 2 slots
	// at a time (the whole generation when that is the size or more).
	if rapid.IntRange(0, 2).Draw(t, "rolling") == 0 {
		cfg.Batch = rapid.IntRange(1, 2).Draw(t, "batch")
	}
	// Mostly a watchdog, so that workers ping, hang and are replaced;
	// else none, and every WorkerWatchdog changes nothing.
	if rapid.IntRange(0, 3).Draw(t, "watchdog") > 0 {
		cfg.Watchdog = rapid.SampledFrom([]time.Duration{time.Second, 30 * time.Second}).Draw(t, "watchdogPeriod")
	}
	if rapid.Bool().Draw(t, "foreign") {
		cfg.StopPids = rapid.SliceOfNDistinct(rapid.IntRange(foreignPid+1, foreignPid+2), 1, 2, rapid.ID[int]).Draw(t, "stopPids")
		cfg.TermPids = rapid.SliceOfN(rapid.Just(foreignPid+3), 0, 1).Draw(t, "termPids")
	}
	return cfg
}

func (h *harness) pick(label string, pids []int) (int, bool) {
	if len(pids) == 0 {
		return 0, false
	}
	return rapid.SampledFrom(pids).Draw(h.t, label), true
}

func (h *harness) deadPids() []int {
	var out []int
	for p := range h.model.dead {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// drawPid picks a pid of one kind: current, old, new generation, dead,
// unknown (an orphan), or a foreign -sf pid.
func (h *harness) drawPid(label string) int {
	mo := h.model
	kinds := []string{"current", "old", "new", "dead", "unknown", "foreign"}
	switch rapid.SampledFrom(kinds).Draw(h.t, label+"Kind") {
	case "current":
		if p, ok := h.pick(label, mo.pids(func(c *child) bool { return mo.serving(c) })); ok {
			return p
		}
	case "old":
		if p, ok := h.pick(label, mo.pids(func(c *child) bool { return mo.retired[c.home] })); ok {
			return p
		}
	case "new":
		if p, ok := h.pick(label, mo.pids(func(c *child) bool { return c.home != mo.cur && !mo.retired[c.home] })); ok {
			return p
		}
	case "dead":
		if p, ok := h.pick(label, h.deadPids()); ok {
			return p
		}
	case "foreign":
		return rapid.IntRange(foreignPid+1, foreignPid+3).Draw(h.t, label)
	}
	return orphanBase + rapid.IntRange(0, 99).Draw(h.t, label)
}

func (h *harness) drawStatus(label string) fsm.ExitStatus {
	if rapid.Bool().Draw(h.t, label+"Signaled") {
		return fsm.ExitStatus{Signal: rapid.SampledFrom([]fsm.Signal{fsm.SIGKILL, fsm.SIGTERM, fsm.SIGSEGV, fsm.SIGINT, fsm.SIGQUIT}).Draw(h.t, label)}
	}
	return fsm.ExitStatus{Code: rapid.SampledFrom([]int{0, 0, 1, 2, 3, 42, 255}).Draw(h.t, label)}
}

func (h *harness) drawSignal(label string) fsm.Signal {
	if rapid.IntRange(0, 3).Draw(h.t, label+"Any") == 0 {
		return fsm.Signal(rapid.IntRange(-1, 70).Draw(h.t, label))
	}
	return rapid.SampledFrom([]fsm.Signal{
		fsm.SIGHUP, fsm.SIGUSR2, fsm.SIGUSR1, fsm.SIGTERM, fsm.SIGINT,
		fsm.SIGTTIN, fsm.SIGTTOU, fsm.SIGQUIT, fsm.SIGWINCH, fsm.SIGCHLD, fsm.SIGURG, fsm.SIGSEGV, 50,
	}).Draw(h.t, label)
}

func (h *harness) drawTimer(label string) fsm.Timer {
	mo := h.model
	switch rapid.IntRange(0, 3).Draw(h.t, label+"Kind") {
	case 0, 1:
		var armed []fsm.Timer
		for t := range mo.armed {
			armed = append(armed, t)
		}
		if len(armed) > 0 {
			slices.SortFunc(armed, func(a, b fsm.Timer) int { return strings.Compare(a.String(), b.String()) })
			return rapid.SampledFrom(armed).Draw(h.t, label)
		}
	case 2:
		if len(mo.stale) > 0 {
			return rapid.SampledFrom(mo.stale).Draw(h.t, label)
		}
	}
	return fsm.Timer{
		Kind:       fsm.TimerKind(rapid.IntRange(0, int(fsm.TimerWatchdog)+1).Draw(h.t, label+"K")),
		Generation: rapid.IntRange(0, mo.maxGen+1).Draw(h.t, label+"G"),
		Slot:       rapid.IntRange(0, 8).Draw(h.t, label+"S"),
		Pid:        h.drawPid(label + "P"),
	}
}

// anyEvent draws an event of any kind, sense or nonsense; it never answers
// a Spawn, so it is safe to feed anywhere.
func (h *harness) anyEvent(label string) fsm.Event {
	switch rapid.IntRange(0, 11).Draw(h.t, label) {
	case 0:
		return fsm.SignalReceived{Signal: h.drawSignal(label + "Sig")}
	case 1:
		e := fsm.WorkerStarted{Generation: rapid.IntRange(0, 9).Draw(h.t, label+"G"), Slot: rapid.IntRange(-1, 9).Draw(h.t, label+"S"), Pid: h.drawPid(label + "P")}
		if h.model.spawns[[2]int{e.Generation, e.Slot}] {
			// A real outcome carries a pid the adapter forked; keep this
			// one nonsense: a pid already in use or no pid at all.
			e.Pid = rapid.SampledFrom(append(h.model.pids(nil), 0, -3)).Draw(h.t, label+"Dup")
		}
		return e
	case 2:
		return fsm.SpawnFailed{Generation: rapid.IntRange(0, 9).Draw(h.t, label+"G"), Slot: rapid.IntRange(-1, 9).Draw(h.t, label+"S"), Status: fsm.ExitStatus{Code: 127}}
	case 3:
		return fsm.WorkerReady{Pid: h.drawPid(label + "P")}
	case 4:
		return fsm.ChildExited{Pid: h.drawPid(label + "P"), Status: h.drawStatus(label + "St")}
	case 5:
		return fsm.NoChildren{}
	case 6:
		return fsm.TimerFired{Timer: h.drawTimer(label + "T")}
	case 7:
		return fsm.Start{}
	case 8:
		return fsm.ExecFailed{Err: "x"}
	case 9:
		return fsm.ImageChanged{Changed: rapid.Bool().Draw(h.t, label+"Changed")}
	case 10:
		return h.drawWatchdog(label + "W")
	}
	h.nextID++
	cmd := fsm.Command(rapid.IntRange(0, 6).Draw(h.t, label+"C"))
	return fsm.ControlRequest{ID: 1_000_000 + h.nextID, Command: cmd, Arg: h.drawArg(cmd)}
}

// drawArg draws a control request's argument: mostly a good one for a
// command that takes one, sometimes nonsense, sometimes one for a command
// that takes none.
func (h *harness) drawArg(cmd fsm.Command) string {
	if cmd == fsm.CmdScale && rapid.IntRange(0, 4).Draw(h.t, "argSense") > 0 {
		return rapid.SampledFrom([]string{"1", "2", "3", "4", "+1", "+2", "-1", "-2"}).Draw(h.t, "scaleArg")
	}
	if cmd == fsm.CmdRestart && rapid.IntRange(0, 4).Draw(h.t, "argSense") > 0 {
		return rapid.SampledFrom([]string{"0", "1", "2", "3"}).Draw(h.t, "slotArg")
	}
	if rapid.IntRange(0, 3).Draw(h.t, "argAny") > 0 {
		return ""
	}
	return rapid.SampledFrom([]string{"0", "-9", "x", "1025", "++1", "+-1", " 2", "3", "99999999999999999999"}).Draw(h.t, "arg")
}
