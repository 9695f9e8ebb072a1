package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// What a worker leaves behind in its process group (issue 17): once the
// worker has exited, the rest of the group gets the stop signal and, after
// --stop-timeout, SIGKILL.

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// gone says whether pid has exited (reaped, or a zombie waiting for it).
func gone(pid int) bool {
	p, ok := readStat(pid)
	return !ok || p.state == 'Z'
}

// A worker that exits leaving a background child: the child gets the stop
// signal at once, not after any timeout, and the master (--restart no)
// exits with the worker's status once it is gone.
func TestLeftoverChildStopped(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `sh -c 'trap "echo TERM > \"$1/bg-sig\"; exit 0" TERM; echo $$ > "$1/bg"; while :; do sleep 0.05; done' bg "$d" &
while [ ! -s "$d/bg" ]; do sleep 0.01; done
exit 3
`, "--restart", "no", "--stop-timeout", "30s")
	start := time.Now()
	if got := m.wait(20 * time.Second); got != 3 {
		t.Errorf("master exited %d, want 3 (the worker's status)", got)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("master took %v to exit: the child was not told to stop", d)
	}
	bg := readPids(filepath.Join(m.dir, "bg"))
	if len(bg) != 1 {
		t.Fatalf("background child pids %v, want one", bg)
	}
	if s := readFile(filepath.Join(m.dir, "bg-sig")); s != "TERM" {
		t.Errorf("background child's signal file says %q, want TERM", s)
	}
	if left := allGone(5*time.Second, bg); len(left) > 0 {
		t.Errorf("background child %v still runs after the master exited", left)
	}
}

// A child that ignores the stop signal is SIGKILLed --stop-timeout after
// the worker's exit; the master waits for that before it exits.
func TestLeftoverChildKilledAfterStopTimeout(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `sh -c 'trap "echo TERM >> \"$1/bg-sig\"" TERM; echo $$ > "$1/bg"; while :; do sleep 0.05; done' bg "$d" &
while [ ! -s "$d/bg" ]; do sleep 0.01; done
exit 3
`, "--restart", "no", "--stop-timeout", "1s")
	start := time.Now()
	if got := m.wait(20 * time.Second); got != 3 {
		t.Errorf("master exited %d, want 3 (the worker's status)", got)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("master exited %v after the start, before the child's 1s stop timeout", d)
	}
	bg := readPids(filepath.Join(m.dir, "bg"))
	if len(bg) != 1 {
		t.Fatalf("background child pids %v, want one", bg)
	}
	if s := readFile(filepath.Join(m.dir, "bg-sig")); s != "TERM" {
		t.Errorf("background child's signal file says %q, want one TERM before the SIGKILL", s)
	}
	if left := allGone(5*time.Second, bg); len(left) > 0 {
		t.Errorf("background child %v survived its SIGKILL", left)
	}
}

// The master reaps what it SIGKILLed before it exits: the moment the
// master has exited, the child that ignored the stop signal is gone, not
// alive (dying) nor a zombie left for init to reap.
func TestLeftoverChildReapedBeforeExit(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `sh -c 'trap "" TERM; echo $$ > "$1/bg"; exec sleep 1000' bg "$d" &
while [ ! -s "$d/bg" ]; do sleep 0.01; done
exit 0
`, "--restart", "no", "--stop-timeout", "300ms")
	if got := m.wait(20 * time.Second); got != 0 {
		t.Errorf("master exited %d, want 0 (the worker's status)", got)
	}
	bg := readPids(filepath.Join(m.dir, "bg"))
	if len(bg) != 1 {
		t.Fatalf("background child pids %v, want one", bg)
	}
	if p, ok := readStat(bg[0]); ok {
		t.Errorf("the SIGKILLed child %d is still there (state %c, parent %d) after the master exited: not reaped", bg[0], p.state, p.ppid)
	}
}

// A stop whose --stop-timeout passes: the worker traps the stop signal, its
// sleeps die of it, the SIGKILL takes the worker and the sleep of the
// moment. The master reaps the lot before it exits, at once: no "still
// there after SIGKILL" wait for a zombie it had not reaped, and no zombie
// of its left behind.
func TestStopTimeoutLeavesNoZombie(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `trap 'echo TERM >> "$d/sig"' TERM
echo $$ > "$d/bg"
while :; do sleep 0.1; done
`, "--restart", "no", "--stop-timeout", "1s")
	e2etest.WaitFor(t, 10*time.Second, "the worker", func() bool { return len(readPids(filepath.Join(m.dir, "bg"))) == 1 })
	start := time.Now()
	m.signal(syscall.SIGTERM)
	m.wait(20 * time.Second)
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("the master took %v to exit after SIGTERM with a 1s stop timeout: it waited for a zombie it had not reaped", d)
	}
	if log := readFile(m.log); strings.Contains(log, "still there after SIGKILL") {
		t.Errorf("the master says what it SIGKILLed survived; log:\n%s", log)
	}
}

// Under --restart always, a worker that crashes leaving a child behind
// leaks nothing: each crashed worker's child is stopped while the next
// worker runs.
func TestLeftoverChildrenNotLeakedAcrossCrashes(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `announce
sleep 1000 &
echo $! >> "$d/bg"
sleep 0.1
exit 3
`, "--restart", "always", "--backoff", "10ms..20ms", "--stop-timeout", "2s")
	var bg []int
	e2etest.WaitFor(t, 20*time.Second, "5 crashed workers' children", func() bool {
		bg = readPids(filepath.Join(m.dir, "bg"))
		return len(bg) >= 6
	})
	if left := allGone(10*time.Second, bg[:5]); len(left) > 0 {
		t.Errorf("background children %v of crashed workers still run", left)
	}
	m.signal(syscall.SIGTERM)
	m.wait(exitTimeout)
	if left := allGone(5*time.Second, readPids(filepath.Join(m.dir, "bg"))); len(left) > 0 {
		t.Errorf("background children %v still run after the master's stop", left)
	}
}

// allGone polls until every one of pids is gone, and returns those that
// are not, after SIGKILLing them: a test that fails leaves nothing behind.
func allGone(timeout time.Duration, pids []int) []int {
	var left []int
	e2etest.Poll(timeout, func() bool {
		left = left[:0]
		for _, p := range pids {
			if !gone(p) {
				left = append(left, p)
			}
		}
		return len(left) == 0
	})
	for _, p := range left {
		syscall.Kill(p, syscall.SIGKILL)
	}
	return left
}
