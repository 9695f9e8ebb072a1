package osadapter

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// terminalFake is a fake kernel whose stdin is the master's controlling
// terminal, with the master (group 4242) in its foreground.
func terminalFake() *fakeOS {
	f := newFakeOS()
	f.tty, f.pgrp, f.fg = true, 4242, 4242
	return f
}

func TestTerminalModeDecision(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mode      string
		tty       bool
		fg        int // the terminal's foreground group (4242 is the master's)
		workers   int
		listeners int
		wout      string
		on        bool
		err       string
	}{
		{name: "auto, interactive", mode: TerminalAuto, tty: true, fg: 4242, workers: 1, on: true},
		{name: "unset (an embedder): off", tty: true, fg: 4242, workers: 1},
		{name: "auto, no terminal", mode: TerminalAuto, tty: false, workers: 1},
		{name: "auto, background job", mode: TerminalAuto, tty: true, fg: 77, workers: 1},
		{name: "auto, two workers", mode: TerminalAuto, tty: true, fg: 4242, workers: 2},
		{name: "auto, a server", mode: TerminalAuto, tty: true, fg: 4242, workers: 1, listeners: 1},
		{name: "auto, prefixed output", mode: TerminalAuto, tty: true, fg: 4242, workers: 1, wout: WorkerOutputPrefix},
		{name: "on, a server in the background", mode: TerminalOn, tty: true, fg: 77, workers: 4, listeners: 2, on: true},
		{name: "on, no terminal", mode: TerminalOn, tty: false, workers: 1, err: "--tty on: stdin is not a terminal"},
		{name: "off", mode: TerminalOff, tty: true, fg: 4242, workers: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeOS()
			f.tty, f.fg, f.pgrp = tc.tty, tc.fg, 4242
			on, why, err := resolveTerminal(f.os(), tc.mode, tc.workers, tc.listeners, tc.wout)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || on != tc.on {
				t.Fatalf("on=%v err=%v, want on=%v", on, err, tc.on)
			}
			if !on && tc.tty && tc.mode == TerminalAuto && why == "" {
				t.Errorf("auto turned the terminal mode off without saying why")
			}
		})
	}
}

// In terminal mode the worker is started in the terminal's foreground,
// its Ctrl-Z stops the master (whose group is not orphaned), SIGCONT from
// the shell's fg hands the terminal back before the worker continues, and
// the worker's exit gives the terminal back to the master and, with
// --restart not given, ends the run with the worker's status.
func TestTerminalModeForegroundJobControl(t *testing.T) {
	f := terminalFake()
	l, logs := fakeLoop(t, f, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 1}}, nil)
	l.start()
	if len(f.spawns) != 1 || !f.spawns[0].attr.Sys.Foreground || f.fg != 100 || l.term.fg != 100 {
		t.Fatalf("worker not started in the foreground: fg %d, spawns %+v", f.fg, f.spawns)
	}
	// Ctrl-Z: the worker stops; the master stops itself.
	f.waits = append(f.waits, fakeWait{100, syscall.WaitStatus(syscall.SIGTSTP<<8 | 0x7f)})
	l.onSignal(syscall.SIGCHLD)
	if !slices.Contains(f.kills, fakeKill{4242, syscall.SIGSTOP}) {
		t.Fatalf("the master did not stop itself when its worker stopped: kills %v\n%s", f.kills, logs)
	}
	// The shell takes the terminal, then gives it back to the master (fg)
	// and continues it.
	f.fg = 4242
	f.calls = nil
	l.onSignal(syscall.SIGCONT)
	i, j := slices.Index(f.calls, "tcsetpgrp 100"), slices.Index(f.calls, "kill -100 18")
	if i < 0 || j < 0 || i > j {
		t.Fatalf("want the terminal given to the worker before SIGCONT is forwarded, calls %v", f.calls)
	}
	// After bg, the master does not take the terminal from the shell.
	f.fg = 55
	f.calls = nil
	l.onSignal(syscall.SIGCONT)
	if slices.ContainsFunc(f.calls, func(c string) bool { return strings.HasPrefix(c, "tcsetpgrp") }) {
		t.Fatalf("the master took the terminal while in the background: %v", f.calls)
	}
	// The worker exits while it holds the terminal: the master takes it
	// back and, --restart not given, exits with the worker's status.
	f.fg = 100
	f.exited(100, 3)
	l.onSignal(syscall.SIGCHLD)
	if f.fg != 4242 {
		t.Errorf("the terminal's foreground is %d after the worker's exit, want the master's 4242", f.fg)
	}
	if !l.exited || l.status != 3 {
		t.Fatalf("exited=%v status=%d, want the run ended with the worker's 3 (--restart no in terminal mode)\n%s", l.exited, l.status, logs)
	}
}

// A worker stopped by SIGSTOP (a debugger, an operator) is no job-control
// stop; and with the master's group orphaned (a session of its own, PID 1
// of "docker run -it") nothing could continue a stopped master: it never
// stops itself.
func TestTerminalModeStopsOnlyAsAJob(t *testing.T) {
	f := terminalFake()
	l, _ := fakeLoop(t, f, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 1}}, nil)
	l.start()
	f.waits = append(f.waits, fakeWait{100, syscall.WaitStatus(syscall.SIGSTOP<<8 | 0x7f)})
	l.onSignal(syscall.SIGCHLD)
	f.orphan = true
	f.waits = append(f.waits, fakeWait{100, syscall.WaitStatus(syscall.SIGTSTP<<8 | 0x7f)})
	l.onSignal(syscall.SIGCHLD)
	l.onSignal(syscall.SIGTSTP)
	if slices.Contains(f.kills, fakeKill{4242, syscall.SIGSTOP}) {
		t.Fatalf("the master stopped itself: kills %v", f.kills)
	}
	// The orphaned worker's Ctrl-Z is undone (as the kernel discards it
	// in an orphaned group); its SIGSTOP was left alone.
	if n := slices.Index(f.kills, fakeKill{-100, syscall.SIGCONT}); n < 0 || slices.Index(f.kills, fakeKill{-100, syscall.SIGTSTP}) < n {
		t.Fatalf("the worker stopped by Ctrl-Z in an orphaned master was not continued at once: kills %v", f.kills)
	}
	if !slices.Contains(f.kills, fakeKill{-100, syscall.SIGTSTP}) {
		t.Fatalf("SIGTSTP not forwarded to the worker: kills %v", f.kills)
	}
	if l.exited {
		t.Fatalf("a stopped worker ended the run")
	}
}

// Outside the terminal mode, SIGTSTP to the master is forwarded, then the
// master stops itself (its group is not orphaned), as dumb-init does.
func TestStopSignalForwardedThenMasterStops(t *testing.T) {
	f := newFakeOS()
	f.pgrp = 4242 // no terminal
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	if l.term.on || f.spawns[0].attr.Sys.Foreground {
		t.Fatalf("terminal mode without a terminal")
	}
	f.calls = nil
	l.onSignal(syscall.SIGTTIN)
	want := []string{"kill -100 21", "kill -101 21", "kill 4242 19"}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("calls %v, want %v", f.calls, want)
	}
}

// The terminal mode, and the worker that holds the terminal, survive a
// re-exec, whose image finds itself in the background and would not turn
// the mode on by itself; --restart stays no.
func TestTerminalModeSurvivesReexec(t *testing.T) {
	f := terminalFake()
	a, _ := fakeLoop(t, f, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 1}}, nil)
	a.start()
	st := reload(t, f, a)
	if st.Terminal == nil || st.Terminal.Fg != 100 {
		t.Fatalf("handed over terminal state %+v, want the worker 100 in the foreground", st.Terminal)
	}
	f.env = f.execs[0].env
	b, _ := fakeLoop(t, f, Config{Machine: fsm.Config{Workers: 1}}, nil)
	if !b.term.on || b.term.fg != 100 {
		t.Fatalf("after re-exec: terminal %+v, want on with worker 100", b.term)
	}
	b.start()
	last := f.spawns[len(f.spawns)-1]
	if !last.attr.Sys.Foreground || f.fg != last.pid {
		t.Fatalf("the new generation's worker %d did not take the terminal over (foreground %d)", last.pid, f.fg)
	}
	f.exited(100, 0)
	f.exited(last.pid, 3)
	b.onSignal(syscall.SIGCHLD)
	if !b.exited || b.status != 3 {
		t.Errorf("after re-exec: the worker's exit 3 gave exited=%v status=%d, want the run ended (--restart no)", b.exited, b.status)
	}
}

// orphaned reads the kernel's view: a process in a session of its own is
// in an orphaned group; one whose parent (this test) is in the same
// session and another group is not.
func TestOrphanedProcessGroup(t *testing.T) {
	if os.Getenv("OSADAPTER_TEST_ORPHANED") == "1" {
		o, err := orphaned()
		if err != nil {
			t.Fatal(err)
		}
		if o {
			os.Stdout.WriteString("ORPHANED=true\n")
		} else {
			os.Stdout.WriteString("ORPHANED=false\n")
		}
		return
	}
	for _, tc := range []struct {
		sys  *syscall.SysProcAttr
		want string
	}{
		{&syscall.SysProcAttr{Setsid: true}, "ORPHANED=true"},
		{&syscall.SysProcAttr{Setpgid: true}, "ORPHANED=false"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestOrphanedProcessGroup$")
		cmd.Env = append(os.Environ(), "OSADAPTER_TEST_ORPHANED=1")
		cmd.SysProcAttr = tc.sys
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%+v: %v, output %q, want %s", tc.sys, err, out, tc.want)
		}
	}
}

// In terminal mode a SIGHUP that comes with the terminal gone (hung up)
// ends the run as SIGTERM does; an operator's SIGHUP, with the terminal
// still there, reloads.
func TestTerminalHangupStops(t *testing.T) {
	f := terminalFake()
	l, _ := fakeLoop(t, f, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 1}}, nil)
	l.start()
	f.tty = false
	l.onSignal(syscall.SIGHUP)
	if len(f.execs) != 0 || !slices.Contains(f.kills, fakeKill{-100, syscall.SIGTERM}) {
		t.Fatalf("SIGHUP after a hangup: execs %d, kills %v; want no reload and SIGTERM to the worker", len(f.execs), f.kills)
	}
	g := terminalFake()
	m, _ := fakeLoop(t, g, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 1}}, nil)
	m.start()
	m.onSignal(syscall.SIGHUP)
	if len(g.execs) != 1 {
		t.Fatalf("SIGHUP with the terminal there: %d execs, want a reload", len(g.execs))
	}
}

// With --tty on and more workers, the terminal goes to one worker: the
// first started, then the worker that takes its slot (a reload's new
// generation), never one that starts beside it.
func TestTerminalModeOneWorkerHoldsTheTerminal(t *testing.T) {
	f := terminalFake()
	l, _ := fakeLoop(t, f, Config{Terminal: TerminalOn, Machine: fsm.Config{Workers: 2, Reexec: fsm.ReexecNever}}, nil)
	l.start()
	if len(f.spawns) != 2 || !f.spawns[0].attr.Sys.Foreground || f.spawns[1].attr.Sys.Foreground || f.fg != 100 {
		t.Fatalf("want only the first worker (100) in the foreground: fg %d, spawns %+v", f.fg, f.spawns)
	}
	l.onSignal(syscall.SIGUSR2)
	if len(f.spawns) != 4 {
		t.Fatalf("%d spawns after a reload, want 4", len(f.spawns))
	}
	var fg []int
	for _, s := range f.spawns[2:] {
		if s.attr.Sys.Foreground {
			fg = append(fg, s.pid)
		}
	}
	if len(fg) != 1 || f.fg != fg[0] || l.term.slot != 0 {
		t.Fatalf("after the reload: foreground workers %v, terminal's %d, slot %d; want the new slot 0 alone", fg, f.fg, l.term.slot)
	}
}

// BenchmarkOrphaned is the cost of the orphaned-group check, paid once per
// SIGTSTP, SIGTTIN or SIGTTOU the master gets: a read of every process's
// /proc stat.
func BenchmarkOrphaned(b *testing.B) {
	for b.Loop() {
		if _, err := orphaned(); err != nil {
			b.Fatal(err)
		}
	}
}
