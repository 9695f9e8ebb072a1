package osadapter

import (
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/sdnotify"
)

// With --watchdog, every worker gets WATCHDOG_USEC (the period in µs, not
// the master's own) and a notify socket, even without --ready notify, and
// starts through a trampoline that sets WATCHDOG_PID to its own pid, as
// systemd does for a service's main process.
func TestWorkerWatchdogEnvironment(t *testing.T) {
	for _, shell := range []string{"/bin/sh", ""} {
		f := newFakeOS()
		f.shell = shell
		f.env = append(f.env, "TMPDIR="+t.TempDir(), "WATCHDOG_USEC=999", "WATCHDOG_PID=1")
		l, _ := fakeLoop(t, f, Config{Machine: fsm.Config{Watchdog: 1500 * time.Millisecond}}, nil)
		t.Cleanup(l.closeTransports)
		l.ignored = nil
		l.start()
		if len(f.spawns) != 2 {
			t.Fatalf("%d spawns, want 2", len(f.spawns))
		}
		s := f.spawns[0]
		if !slices.Contains(s.attr.Env, "WATCHDOG_USEC=1500000") || slices.Contains(s.attr.Env, "WATCHDOG_USEC=999") || slices.Contains(s.attr.Env, "WATCHDOG_PID=1") {
			t.Errorf("worker env %q: want WATCHDOG_USEC=1500000 and none of the master's WATCHDOG_*", s.attr.Env)
		}
		if !slices.ContainsFunc(s.attr.Env, func(kv string) bool { return strings.HasPrefix(kv, "NOTIFY_SOCKET="+l.ready.dir+"/") }) {
			t.Errorf("worker env %q: want a NOTIFY_SOCKET of its own in %s", s.attr.Env, l.ready.dir)
		}
		if shell != "" {
			want := []string{"sh", "-c", `WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$0" "$@"`, "/bin/worker", "-x"}
			if s.argv0 != shell || !slices.Equal(s.argv, want) {
				t.Errorf("spawned %q %q, want %s %q", s.argv0, s.argv, shell, want)
			}
			continue
		}
		if s.argv0 != "/proc/self/exe" || !slices.Contains(s.attr.Env, "MWORKER_TRAMPOLINE=ign=;mask=0;path=/bin/worker") {
			t.Errorf("spawned %q with env %q, want the self-exec trampoline", s.argv0, s.attr.Env)
		}
		env := trampolineEnv(s.attr.Env, 12345)
		if !slices.Contains(env, "WATCHDOG_PID=12345") || slices.Contains(env, "LISTEN_PID=12345") {
			t.Errorf("trampoline env %q: want WATCHDOG_PID=12345 and no LISTEN_PID", env)
		}
	}
}

// A worker's notify socket feeds WATCHDOG=1 and WATCHDOG=trigger as
// WorkerWatchdog under --watchdog, and READY=1 as WorkerReady only under
// --ready notify; STATUS= is kept as the worker's text; a datagram with
// none of these reaches no one.
func TestNotifySocketFeedsWatchdog(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := newReadySockets(true, log, readyEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.exit()
	rs, err := r.open(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	r.watch(rs, 100)
	tests := []struct {
		notify, watchdog bool
		datagram         string
		want             []fsm.Event
	}{
		{false, true, "READY=1\nWATCHDOG=1", []fsm.Event{fsm.WorkerWatchdog{Pid: 100}}},
		{false, true, "WATCHDOG=trigger\nSTATUS=stuck", []fsm.Event{fsm.WorkerWatchdog{Pid: 100, Trigger: true}}},
		{true, true, "WATCHDOG=1\nREADY=1", []fsm.Event{fsm.WorkerReady{Pid: 100}, fsm.WorkerWatchdog{Pid: 100}}},
		{true, false, "READY=1\nWATCHDOG=1", []fsm.Event{fsm.WorkerReady{Pid: 100}}},
		{true, true, "STATUS=serving", nil}, // no event: only status's text
		{false, false, "STOPPING=1", nil},   // nothing at all
	}
	r.texts = make(map[int]string)
	for _, tt := range tests {
		r.notify, r.watchdog = tt.notify, tt.watchdog
		if err := sdnotify.Send(rs.s.Addr(), tt.datagram); err != nil {
			t.Fatal(err)
		}
		if tt.datagram == "STOPPING=1" {
			// Nothing to receive: the next datagram's signal comes first.
			if err := sdnotify.Send(rs.s.Addr(), "WATCHDOG=1"); err != nil {
				t.Fatal(err)
			}
			r.watchdog = true
			tt.want = []fsm.Event{fsm.WorkerWatchdog{Pid: 100}}
			tt.datagram += " then WATCHDOG=1"
		}
		if got := r.events(nextReady(t, r)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("notify %v, watchdog %v, %q: events %v, want %v", tt.notify, tt.watchdog, tt.datagram, got, tt.want)
		}
	}
	// The last STATUS= is the worker's text, for status.
	if got := r.texts[100]; got != "serving" {
		t.Errorf("worker's STATUS= text %q, want \"serving\"", got)
	}
	// A reaped worker's late datagram feeds nothing.
	stale := readySignal{sock: rs, watchdog: "1"}
	r.drop(100)
	if got := r.events(stale); got != nil {
		t.Errorf("a reaped worker's WATCHDOG=1 gave %v", got)
	}
	if _, ok := r.texts[100]; ok {
		t.Error("a reaped worker's STATUS= text is kept")
	}
}
