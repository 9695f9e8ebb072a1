package osadapter

import (
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// writes records each Write call separately.
type writes struct {
	mu    sync.Mutex
	calls []string
}

func (w *writes) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, string(p))
	return len(p), nil
}

func (w *writes) all() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.calls, "")
}

func (w *writes) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

// writesLoop is a started loop over f with workers workers whose log goes,
// write by write, to w.
func writesLoop(t *testing.T, f *fakeOS, workers int, w *writes, replier Replier) *loop {
	t.Helper()
	cfg := Config{Command: []string{"/bin/worker"}, LogLevel: -4, Replier: replier}
	cfg.Machine = fsm.Config{Workers: workers, ReadyTimeout: 30e9, StopTimeout: 10e9, StopSignal: 15,
		Path: "/usr/bin/mworker", Argv: []string{"mworker", "run", "--", "/bin/worker"}}
	l, err := newLoop(cfg, f.os(), nil, w)
	if err != nil {
		t.Fatal(err)
	}
	l.start()
	return l
}

func TestHeldWriterNestsAndKeepsOrder(t *testing.T) {
	var w writes
	h := &heldWriter{w: &w}
	h.Write([]byte("direct\n"))
	h.hold()
	h.Write([]byte("a\n"))
	h.hold()
	h.Write([]byte("b\n"))
	h.release()
	if w.count() != 1 {
		t.Fatalf("inner release wrote: %q", w.calls)
	}
	h.Write([]byte("c\n"))
	h.release()
	if got, want := w.calls, []string{"direct\n", "a\nb\nc\n"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("writes %q, want %q", got, want)
	}
	h.release() // unbalanced: no panic, nothing written
	h.Write([]byte("after\n"))
	if w.count() != 3 {
		t.Fatalf("after the hold, a line must be written at once: %q", w.calls)
	}

	h.hold()
	h.Write([]byte("x\n"))
	h.flush()
	h.Write([]byte("y\n"))
	if got := w.all(); !strings.HasSuffix(got, "after\nx\n") {
		t.Fatalf("flush did not write what was held: %q", got)
	}
	h.release()
	if got := w.all(); !strings.HasSuffix(got, "x\ny\n") {
		t.Fatalf("lines held after a flush were lost: %q", got)
	}
}

func TestEventSignalsWorkersBeforeLoggingAndLogsInOneWrite(t *testing.T) {
	f := newFakeOS()
	var w writes
	l := writesLoop(t, f, 2, &w, nil)
	before := w.count()
	var atKill []string
	f.onKill = func(pid int, sig syscall.Signal) { atKill = append(atKill, w.all()) }
	l.step(fsm.SignalReceived{Signal: fsm.SIGTERM})
	if len(atKill) != 2 {
		t.Fatalf("SIGTERM forwarded to %d workers, want 2 (kills %v)", len(atKill), f.kills)
	}
	for _, logs := range atKill {
		if strings.Contains(logs, "terminating") {
			t.Fatalf("the stop was logged before the workers were signalled:\n%s", logs)
		}
	}
	if !strings.Contains(w.all(), "terminating") {
		t.Fatalf("the stop was never logged:\n%s", w.all())
	}
	if got := w.count() - before; got != 1 {
		t.Fatalf("one event's lines took %d writes, want 1: %q", got, w.calls[before:])
	}

	// Both workers exit: their lines and the exit's come out in one write,
	// in the order they were logged.
	before = w.count()
	f.waits = []fakeWait{{100, syscall.WaitStatus(syscall.SIGTERM)}, {101, syscall.WaitStatus(syscall.SIGTERM)}}
	l.reap()
	if !l.exited {
		t.Fatalf("the master did not exit once every worker was reaped:\n%s", w.all())
	}
	out := strings.Join(w.calls[before:], "")
	i, j := strings.Index(out, "pid=101"), strings.Index(out, "exiting")
	if i < 0 || j < i {
		t.Fatalf("exit lines out of order:\n%s", out)
	}
}

func TestHeldLinesAreWrittenBeforeExec(t *testing.T) {
	f := newFakeOS()
	var w writes
	l := writesLoop(t, f, 1, &w, nil)
	var atExec string
	sys := l.sys
	exec := sys.Exec
	sys.Exec = func(path string, argv, env []string) error {
		atExec = w.all()
		return exec(path, argv, env)
	}
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 1 {
		t.Fatalf("SIGUSR2 did not re-exec: %v", f.calls)
	}
	if !strings.Contains(atExec, "reload") {
		t.Fatalf("the reload's lines were still held at execve, the next image would never print them:\n%q", atExec)
	}
}

func TestHeldLinesAreWrittenBeforeAReply(t *testing.T) {
	f := newFakeOS()
	var w writes
	var atReply string
	l := writesLoop(t, f, 1, &w, replierFunc(func(fsm.Reply) error {
		atReply = w.all()
		return nil
	}))
	l.step(fsm.ControlRequest{ID: 1, Command: fsm.CmdStop})
	if !strings.Contains(atReply, "soft stop") {
		t.Fatalf("the stop was answered before it was logged; log at the reply:\n%s", atReply)
	}
}

type replierFunc func(fsm.Reply) error

func (f replierFunc) Reply(r fsm.Reply) error { return f(r) }
