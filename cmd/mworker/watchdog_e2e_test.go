package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// --watchdog 1s, for real: every worker gets WATCHDOG_USEC=1000000 and
// WATCHDOG_PID=<its pid>. The first worker pings for 2s (each ping moves
// its deadline), then falls silent: 1s after its last ping it is stopped,
// with a WARN that names it, and a new worker takes its slot. The second
// asks with WATCHDOG=trigger and is replaced at once. The third never
// pings and is left alone.
func TestWatchdogReplacesASilentWorker(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3 to send notify datagrams with")
	}
	m := startRun(t, "", `echo "$WATCHDOG_USEC $WATCHDOG_PID $$" > "$d/wd.$$"
echo "$MWORKER_SLOT" > "$d/slot.$$"
n=$(cat "$d/spawned" 2>/dev/null | wc -l)
announce
# ping COUNT MESSAGE...: send each MESSAGE to NOTIFY_SOCKET, COUNT times
# 0.2s apart, each after writing the time to lastping.<pid>. One python3
# for them all: on a loaded machine one takes a good part of a second to
# start.
ping() {
	python3 - "$d/lastping.$$" "$@" <<'PY'
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    if i:
        time.sleep(0.2)
    for msg in sys.argv[3:]:
        with open(sys.argv[1], "w") as f:
            f.write(str(time.time_ns()))
        s.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"])
PY
}
case $n in
0)
	ping 10 WATCHDOG=1
	touch "$d/silent.$$"
	;;
1)
	ping 1 WATCHDOG=1 WATCHDOG=trigger
	;;
esac
while :; do sleep 0.5; done
`, "--watchdog", "1s", "--ready", "immediate", "--backoff", "10ms..20ms", "--stop-timeout", "5s")

	first := m.waitWorkers(1)[0]
	line := m.waitLog(0, "worker hung", "no watchdog=1 for 1s", "pid="+strconv.Itoa(first)+" ", "generation=1", "slot=0")
	if !strings.Contains(line, "level=WARN") {
		t.Errorf("the watchdog's line is not a warning: %q", line)
	}
	// It was stopped only once silent: the pings for 2s (twice the
	// period) moved its deadline, and the stop came a period after the
	// last one (its time is taken before the ping; the log's clock is
	// milliseconds).
	if _, err := os.Stat(filepath.Join(m.dir, "silent."+strconv.Itoa(first))); err != nil {
		t.Errorf("worker %d was stopped while it was still pinging: %v", first, err)
	}
	last, err := strconv.ParseInt(m.file("lastping", first), 10, 64)
	if err != nil {
		t.Fatalf("worker %d's last ping: %v", first, err)
	}
	if hung := logTime(t, line); hung.Sub(time.Unix(0, last)) < time.Second-time.Millisecond {
		t.Errorf("worker %d was stopped %v after its last ping, before the 1s period", first, hung.Sub(time.Unix(0, last)))
	}

	// Replaced in its slot, by the restart policy.
	var second int
	e2etest.WaitFor(t, 10*time.Second, "a new worker in slot 0", func() bool {
		for _, p := range m.spawned() {
			if p != first && m.file("slot", p) == "0" {
				second = p
				return true
			}
		}
		return false
	})
	m.waitLog(0, "worker hung", "watchdog=trigger", "pid="+strconv.Itoa(second)+" ", "slot=0")
	e2etest.WaitFor(t, 10*time.Second, "first and second worker gone", func() bool { return !alive(first) && !alive(second) })
	third := m.waitWorkers(1)[0]
	if third == first || third == second || m.file("slot", third) != "0" {
		t.Fatalf("third worker %d (slot %q): want a new one in slot 0", third, m.file("slot", third))
	}
	for _, p := range []int{first, second, third} {
		want := "1000000 " + strconv.Itoa(p) + " " + strconv.Itoa(p)
		if got := m.file("wd", p); got != want {
			t.Errorf("worker %d saw WATCHDOG_USEC, WATCHDOG_PID and $$ %q, want %q", p, got, want)
		}
	}
	m.signal(syscall.SIGTERM)
	m.wait(exitTimeout)
	if n := strings.Count(m.logText(), "worker hung"); n != 2 {
		t.Errorf("%d workers judged hung, want 2: the third never pinged\n%s", n, m.logText())
	}
}

// logTime reads the time= of a text log line.
func logTime(t *testing.T, line string) time.Time {
	t.Helper()
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "time="); ok {
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			return at
		}
	}
	t.Fatalf("log line %q has no time=", line)
	return time.Time{}
}
