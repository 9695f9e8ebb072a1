package osadapter

import (
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
	"github.com/mworker/mworker/internal/sdnotify"
)

// A worker must not see the watchdog systemd gave the master: a worker
// library (sd_watchdog_enabled) would ping for the master, to a socket it
// does not have, and a check of WATCHDOG_PID against its own pid is all
// that keeps it from trying.
func TestWorkerEnvDropsTheMastersWatchdog(t *testing.T) {
	env := workerEnv([]string{"PATH=/bin", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=1", "WATCHDOG_X=kept", "NOTIFY_SOCKET=/run/n"})
	if want := []string{"PATH=/bin", "WATCHDOG_X=kept"}; !slices.Equal(env, want) {
		t.Fatalf("workerEnv = %q, want %q", env, want)
	}
}

// The master pings only a watchdog that is its own: WATCHDOG_USEC set and
// positive, WATCHDOG_PID absent or its pid, and a NOTIFY_SOCKET to ping.
func TestMasterWatchdogFromEnv(t *testing.T) {
	const pid = 42
	tests := []struct {
		env   []string
		every time.Duration // 0: no watchdog
		warn  bool
	}{
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=200000"}, 100 * time.Millisecond, false},
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=42"}, 15 * time.Second, false},
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=30000000", "WATCHDOG_PID=43"}, 0, false},
		{[]string{"NOTIFY_SOCKET=/run/n"}, 0, false},
		{[]string{"WATCHDOG_USEC=200000"}, 0, true},
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=0"}, 0, true},
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=soon"}, 0, true},
		{[]string{"NOTIFY_SOCKET=/run/n", "WATCHDOG_USEC=200000", "WATCHDOG_PID=x"}, 0, true},
	}
	for _, tt := range tests {
		w, warning := newMasterWatchdog(tt.env, pid)
		switch {
		case tt.every == 0 && w != nil:
			t.Errorf("%q: watchdog every %v, want none", tt.env, time.Duration(w.every))
		case tt.every != 0 && (w == nil || time.Duration(w.every) != tt.every || w.addr != "/run/n"):
			t.Errorf("%q: watchdog %+v, want every %v to /run/n", tt.env, w, tt.every)
		case tt.warn != (warning != ""):
			t.Errorf("%q: warning %q, want one: %v", tt.env, warning, tt.warn)
		}
	}
}

// The test plays systemd with WatchdogSec=200ms: the master pings
// WATCHDOG=1 from its event loop every 100 ms, goes on after a re-exec
// (the variables stay in its environment), never passes them to a worker,
// and stops with its exit.
func TestRealMasterWatchdog(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	addr := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var (
		mu     sync.Mutex
		pings  []time.Time
		states []string
	)
	go func() {
		buf := make([]byte, sdnotify.MaxSize)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			if string(buf[:n]) == "WATCHDOG=1" {
				pings = append(pings, time.Now())
			} else {
				states = append(states, string(buf[:n]))
			}
			mu.Unlock()
		}
	}()
	count := func() (int, []time.Time) {
		mu.Lock()
		defer mu.Unlock()
		return len(pings), slices.Clone(pings)
	}
	sawState := func(prefix string, n int) bool {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, s := range states {
			if strings.HasPrefix(s, prefix) {
				k++
			}
		}
		return k >= n
	}
	// Three pings within about a second (at 100 ms, 200 ms apart), counted
	// from the first one seen after from.
	threePings := func(what string, from int) {
		t.Helper()
		e2etest.WaitFor(t, 10*time.Second, what, func() bool { n, _ := count(); return n >= from+3 })
		_, p := count()
		if d := p[from+2].Sub(p[from]); d > 1500*time.Millisecond {
			t.Errorf("%s: 3 pings took %v, want about 200ms (WATCHDOG_USEC/2 apart)", what, d)
		}
	}

	m := startMaster(t, bin, testMaster{Workers: 1, Command: []string{bin, "worker", "DIR"},
		Env: []string{"NOTIFY_SOCKET=" + addr, "WATCHDOG_USEC=200000"}})
	e2etest.WaitFor(t, 20*time.Second, "READY=1", func() bool { return sawState("READY=1", 1) })
	threePings("3 WATCHDOG=1", 0)

	// A re-exec (the test master's --reexec is always): the new image pings too.
	m.signal(syscall.SIGUSR2)
	e2etest.WaitFor(t, 20*time.Second, "READY=1 after the reload", func() bool { return sawState("READY=1", 2) })
	n, _ := count()
	threePings("3 WATCHDOG=1 after the re-exec", n)

	// A worker of each image: the first started by the image given the
	// variables, the second by the re-executed one.
	e2etest.WaitFor(t, 10*time.Second, "the logs of both workers", func() bool { return len(workerPids(m.dir)) == 2 })
	for _, w := range workerPids(m.dir) {
		if l := workerLog(m.dir, w); strings.Contains(l, "badenv") {
			t.Errorf("worker %d saw the master's variables:\n%s", w, l)
		}
	}

	m.signal(syscall.SIGTERM)
	m.wait(20 * time.Second)
	// Datagrams keep their order: once the reader has seen a marker sent
	// now, it has read everything the master sent before its exit. From
	// then on no ping may come, from a worker or anyone (a few periods).
	if err := sdnotify.Send(addr, "X_MARKER=1"); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 10*time.Second, "the marker", func() bool { return sawState("X_MARKER=1", 1) })
	after, _ := count()
	if e2etest.Poll(600*time.Millisecond, func() bool { n, _ := count(); return n > after }) {
		n, _ := count()
		t.Errorf("%d pings after the master exited", n-after)
	}
}
