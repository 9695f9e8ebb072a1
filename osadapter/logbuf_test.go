package osadapter

import (
	"golang.org/x/sys/unix"

	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
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
func writesLoop(t *testing.T, f *fakeOS, workers int, w io.Writer, replier Replier) *loop {
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

// settled waits, without a practical bound, until h's queue has written
// everything held or queued.
func settled(h *heldWriter) {
	h.sync(logWait{stall: time.Minute, limit: time.Minute})
}

// queueWritten waits, without a practical bound, until h's queue has
// written what it queues, leaving what h holds.
func queueWritten(h *heldWriter) {
	h.q.wait(h.q.queuedBytes(), logWait{stall: time.Minute, limit: time.Minute})
}

func TestHeldWriterNestsAndKeepsOrder(t *testing.T) {
	var w writes
	h := newHeldWriter(&w)
	h.Write([]byte("direct\n"))
	settled(h)
	h.hold()
	h.Write([]byte("a\n"))
	h.hold()
	h.Write([]byte("b\n"))
	h.release()
	queueWritten(h)
	if w.count() != 1 {
		t.Fatalf("inner release wrote: %q", w.calls)
	}
	h.Write([]byte("c\n"))
	h.release()
	settled(h)
	if got, want := w.calls, []string{"direct\n", "a\nb\nc\n"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("writes %q, want %q", got, want)
	}
	h.release() // unbalanced: no panic, nothing written
	h.Write([]byte("after\n"))
	queueWritten(h)
	if w.count() != 3 {
		t.Fatalf("after the hold, a line must be written at once: %q", w.calls)
	}

	h.hold()
	h.Write([]byte("x\n"))
	h.flush()
	queueWritten(h)
	h.Write([]byte("y\n"))
	if got := w.all(); !strings.HasSuffix(got, "after\nx\n") {
		t.Fatalf("flush did not write what was held: %q", got)
	}
	h.release()
	settled(h)
	if got := w.all(); !strings.HasSuffix(got, "x\ny\n") {
		t.Fatalf("lines held after a flush were lost: %q", got)
	}
}

func TestEventSignalsWorkersBeforeLoggingAndLogsInOneWrite(t *testing.T) {
	f := newFakeOS()
	var w writes
	l := writesLoop(t, f, 2, &w, nil)
	settled(l.out)
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
	settled(l.out)
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
	settled(l.out)
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
	sys.Exec = func(path string, argv, env []string, held *unix.Sigset_t) error {
		atExec = w.all()
		return exec(path, argv, env, held)
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

// stalledWriter is a stderr whose reader stalls: each Write blocks until
// the test lets it through.
type stalledWriter struct {
	writes
	entered chan struct{} // one value each time a Write starts
	gate    chan struct{} // closed: writes go through
}

func newStalledWriter(t *testing.T) *stalledWriter {
	w := &stalledWriter{entered: make(chan struct{}, 1000), gate: make(chan struct{})}
	t.Cleanup(w.resume)
	return w
}

func (w *stalledWriter) Write(p []byte) (int, error) {
	w.entered <- struct{}{}
	<-w.gate
	return w.writes.Write(p)
}

func (w *stalledWriter) resume() {
	select {
	case <-w.gate:
	default:
		close(w.gate)
	}
}

func TestLogQueueDropsWhatDoesNotFitAndReportsOnceCaughtUp(t *testing.T) {
	w := newStalledWriter(t)
	q := newLogQueue(w, 100)
	type report struct{ lines, total int64 }
	reports := make(chan report, 10)
	q.report = func(lines, total int64) { reports <- report{lines, total} }

	q.enqueue([]byte("first\n"))
	<-w.entered // the writer is stuck in write(2) with 6 bytes
	var lines []string
	for i := range 20 {
		lines = append(lines, fmt.Sprintf("line%04d\n", i))
	}
	// 94 bytes of room: 10 lines of 9 bytes fit, in one burst and then
	// one by one; the last 10 are dropped whole.
	q.enqueue([]byte(strings.Join(lines[:5], "")))
	for _, l := range lines[5:] {
		q.enqueue([]byte(l))
	}
	if got := q.droppedLines(); got != 10 {
		t.Fatalf("%d lines counted as dropped, want 10", got)
	}
	q.enqueue([]byte("no newline")) // a partial line counts as one
	if got := q.droppedLines(); got != 11 {
		t.Fatalf("%d lines counted as dropped, want 11", got)
	}
	select {
	case r := <-reports:
		t.Fatalf("reported %v while the reader was still stalled", r)
	default:
	}

	w.resume()
	select {
	case r := <-reports:
		if r != (report{11, 11}) {
			t.Fatalf("report %+v, want 11 lines (11 in all)", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drop was never reported once the reader caught up")
	}
	if got, want := w.all(), "first\n"+strings.Join(lines[:10], ""); got != want {
		t.Fatalf("written %q, want the lines that fit, in order: %q", got, want)
	}
	select {
	case r := <-reports:
		t.Fatalf("reported twice: %v", r)
	default:
	}
}

// A reply waits for the log to be written only while its writer is
// healthy: a stalled reader does not hold the answer back.
func TestStalledStderrDoesNotHoldAReply(t *testing.T) {
	f := newFakeOS()
	w := newStalledWriter(t)
	replied := false
	l := writesLoop(t, f, 1, w, replierFunc(func(fsm.Reply) error {
		replied = true
		return nil
	}))
	<-w.entered
	done := make(chan struct{})
	go func() {
		l.step(fsm.ControlRequest{ID: 1, Command: fsm.CmdStatus})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a status request was not answered while stderr was stalled")
	}
	if !replied {
		t.Fatal("no reply")
	}
}

// Lines that an execve leaves unwritten are counted as dropped, handed to
// the next image, reported there once its writer catches up, and shown by
// status.
func TestLinesLostAtExecAreCountedAcrossIt(t *testing.T) {
	f := newFakeOS()
	w := newStalledWriter(t)
	a := writesLoop(t, f, 1, w, nil)
	<-w.entered
	a.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 1 {
		t.Fatalf("SIGUSR2 did not re-exec: %v", f.calls)
	}
	i := slices.IndexFunc(f.execs[0].env, func(kv string) bool { return strings.HasPrefix(kv, envLogDropped+"=") })
	if i < 0 {
		t.Fatalf("no %s in the next image's environment", envLogDropped)
	}
	total, unreported, err := parseLogDropped(strings.TrimPrefix(f.execs[0].env[i], envLogDropped+"="))
	if err != nil || total == 0 || unreported != total {
		t.Fatalf("%s: %d, %d, %v: want as many unreported as dropped, and some", f.execs[0].env[i], total, unreported, err)
	}

	f.env = f.execs[0].env
	b, logs := fakeLoop(t, f, Config{}, nil)
	b.start()
	want := fmt.Sprintf("%d log lines dropped: stderr was not being read", total)
	// The writer reports once it has written everything: after the lines
	// String waits for.
	if !e2etest.Poll(10*time.Second, func() bool { return strings.Contains(logs.String(), want) }) {
		t.Fatalf("the next image did not report the lines lost at the exec (%q):\n%s", want, logs.String())
	}
	if got := b.out.q.droppedLines(); got != total {
		t.Fatalf("status would show %d dropped lines, want %d", got, total)
	}
}

func TestBadLogDroppedIsRejected(t *testing.T) {
	for _, v := range []string{"", "1", "x,1", "1,x", "-1,0", "1,2"} {
		if _, _, err := parseLogDropped(v); err == nil || !strings.Contains(err.Error(), envLogDropped) {
			t.Errorf("%q: err %v, want one naming %s", v, err, envLogDropped)
		}
	}
	if total, unreported, err := parseLogDropped("7,3"); err != nil || total != 7 || unreported != 3 {
		t.Errorf("7,3: %d, %d, %v", total, unreported, err)
	}
}
