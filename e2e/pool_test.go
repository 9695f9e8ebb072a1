package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// ctl runs "mworker CMD ARGS... --control CTL" and returns its exit status,
// stdout and stderr.
func (m *master) ctl(cmd string, args ...string) (int, string, string) {
	m.t.Helper()
	var stdout, stderr bytes.Buffer
	c := exec.Command(mworkerPath, append(append([]string{cmd}, args...), "--control", m.ctlSock, "--timeout", "60s")...)
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	if err == nil {
		return 0, stdout.String(), stderr.String()
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stdout.String(), stderr.String()
	}
	m.t.Fatalf("mworker %s: %v", cmd, err)
	return -1, "", ""
}

// peak samples the master's status until stopped and keeps the largest
// number of live workers it saw.
type peak struct {
	stopping chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	max      int
	samples  int
}

func watchPeak(m *master) *peak {
	p := &peak{stopping: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-p.stopping:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if s, err := m.askStatus(); err == nil {
				p.mu.Lock()
				p.max = max(p.max, len(s.Workers))
				p.samples++
				p.mu.Unlock()
			}
		}
	}()
	return p
}

func (p *peak) stop() (int, int) {
	close(p.stopping)
	p.wg.Wait()
	return p.max, p.samples
}

// Issue 13's load test: fresh connections keep being answered while the
// pool is scaled 2 → 8 → 1 → 4 and a --batch 1 rolling reload replaces the
// 4 workers one at a time; no request fails, the pool has the size asked
// for after each step, and the rolling reload never runs more than 4 + 1
// workers.
func TestScaleAndRollingReloadUnderLoadDropNothing(t *testing.T) {
	m := startMaster(t, t.TempDir(), []string{"-n", "2", "--ready", "notify", "--batch", "1", "--stop-timeout", "5s"}, mworkerPath, "demo-worker")
	m.waitSettled(2, 15*time.Second)
	l := startLoad(m.httpSock, 4, 1_000_000, 120*time.Second)
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= 50 }) {
		t.Fatalf("the load got no 50 answers in 10s: %v", l.stop())
	}
	for _, step := range []struct {
		arg  string
		size int
	}{{"8", 8}, {"1", 1}, {"+3", 4}} {
		code, out, errOut := m.ctl("scale", step.arg)
		if code != 0 || !strings.Contains(out, fmt.Sprintf("scaling to %d worker", step.size)) {
			t.Fatalf("mworker scale %s: exit %d, stdout %q, stderr %q; load: %v", step.arg, code, out, errOut, l.stop())
		}
		s := m.waitSettled(step.size, 30*time.Second)
		if s.Master.Size != step.size {
			t.Errorf("after scale %s, status says size %d, want %d", step.arg, s.Master.Size, step.size)
		}
		n := l.answered()
		if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= n+50 }) {
			t.Fatalf("the load got no 50 answers in 10s after scale %s: %v", step.arg, l.stop())
		}
	}
	before := m.waitSettled(4, 15*time.Second)
	p := watchPeak(m)
	code, errOut := m.reload()
	most, samples := p.stop()
	if code != 0 {
		t.Fatalf("the rolling reload failed: exit %d: %s; load: %v", code, errOut, l.stop())
	}
	n := l.answered()
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= n+50 }) {
		t.Fatalf("the load got no 50 answers in 10s after the reload: %v", l.stop())
	}
	r := l.stop()
	t.Logf("load: %d fresh connections answered, %d failed; rolling reload: at most %d live workers in %d status samples", r.ok, r.failed, most, samples)
	if r.bounded {
		t.Fatalf("the load ran out of requests or time before the steps were done: %v", r)
	}
	if r.failed != 0 {
		t.Errorf("%d of %d requests failed while scaling and reloading: %v", r.failed, r.ok+r.failed, r)
	}
	if most > 5 {
		t.Errorf("the --batch 1 reload of 4 workers ran %d workers at once, want at most 5", most)
	}
	after := m.waitSettled(4, 15*time.Second)
	if after.Master.Generation != before.Master.Generation+1 {
		t.Errorf("after the reload the master serves generation %d, want %d", after.Master.Generation, before.Master.Generation+1)
	}
	if log, _ := os.ReadFile(m.log); strings.Count(string(log), "rolling reload: batch ready") != 3 {
		t.Errorf("the log does not have 3 batches told ready before the promotion (4 slots, --batch 1):\n%s", lastLines(string(log), 40))
	}
}

// restart SLOT replaces one worker without a failed request; a replacement
// that fails leaves the old worker serving and the command exits 1 with
// the reason; bad arguments exit 2 (client) or 1 (master) and change
// nothing.
func TestRestartOneWorker(t *testing.T) {
	dir := t.TempDir()
	failFile := filepath.Join(dir, "fail")
	script := filepath.Join(dir, "worker.sh")
	if err := e2etest.WriteExecutable(script, fmt.Sprintf(`#!/bin/sh
if [ -e '%s' ]; then echo "worker $$: failing on purpose" >&2; exit 3; fi
exec '%s' demo-worker
`, failFile, mworkerPath)); err != nil {
		t.Fatal(err)
	}
	m := startMaster(t, dir, []string{"-n", "2", "--ready", "notify", "--ready-timeout", "10s", "--stop-timeout", "5s"}, "/bin/sh", script)
	first := m.waitSettled(2, 15*time.Second)
	slotPid := func(s status, slot int) int {
		for _, w := range s.Workers {
			if w.Slot == slot && w.Current {
				return w.Pid
			}
		}
		return 0
	}
	l := startLoad(m.httpSock, 4, 1_000_000, 120*time.Second)
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= 50 }) {
		t.Fatalf("the load got no 50 answers in 10s: %v", l.stop())
	}
	code, out, errOut := m.ctl("restart", "1")
	if code != 0 || !strings.Contains(out, "slot 1 restarted") {
		t.Fatalf("mworker restart 1: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	s := m.waitSettled(2, 15*time.Second)
	if p0, p1 := slotPid(s, 0), slotPid(s, 1); p0 != slotPid(first, 0) || p1 == slotPid(first, 1) || p1 == 0 {
		t.Errorf("after restart 1: slots 0 and 1 are pids %d and %d, want %d (unchanged) and a new one (was %d)", p0, p1, slotPid(first, 0), slotPid(first, 1))
	}
	n := l.answered()
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= n+50 }) {
		t.Fatalf("the load got no 50 answers in 10s after the restart: %v", l.stop())
	}
	r := l.stop()
	t.Logf("load: %d fresh connections answered, %d failed", r.ok, r.failed)
	if r.failed != 0 {
		t.Errorf("%d of %d requests failed across restart 1: %v", r.failed, r.ok+r.failed, r)
	}

	// A replacement that exits before it is ready.
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = m.ctl("restart", "0")
	if code != 1 || !strings.Contains(errOut, "restart of slot 0 failed") || !strings.Contains(errOut, "exit:3") {
		t.Errorf("restart 0 with a failing replacement: exit %d, stderr %q; want 1 and the reason", code, errOut)
	}
	if now := m.waitSettled(2, 15*time.Second); slotPid(now, 0) != slotPid(s, 0) {
		t.Errorf("after the failed restart slot 0 is pid %d, want %d still serving", slotPid(now, 0), slotPid(s, 0))
	}

	for _, bad := range []struct {
		arg  string
		code int
		says string
	}{
		{"x", 2, `bad SLOT "x"`},
		{"7", 1, `bad slot "7"`},
	} {
		code, _, errOut := m.ctl("restart", bad.arg)
		if code != bad.code || !strings.Contains(errOut, bad.says) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("mworker restart %s: exit %d, stderr %q; want exit %d and one line saying %q", bad.arg, code, errOut, bad.code, bad.says)
		}
	}
	for _, bad := range []struct {
		arg  string
		code int
		says string
	}{
		{"four", 2, `bad N "four"`},
		{"0", 1, "out of range"},
		{"-5", 1, "out of range"},
	} {
		code, _, errOut := m.ctl("scale", bad.arg)
		if code != bad.code || !strings.Contains(errOut, bad.says) {
			t.Errorf("mworker scale %s: exit %d, stderr %q; want exit %d saying %q", bad.arg, code, errOut, bad.code, bad.says)
		}
	}
	if now := m.waitSettled(2, 15*time.Second); now.Master.Size != 2 || !slices.Equal(now.currentPids(), m.waitSettled(2, time.Second).currentPids()) {
		t.Errorf("bad requests changed the pool: %+v", now)
	}
}

// The desired size outlives a re-exec of the master (--reexec always): the
// new image starts as many workers as the pool had, whatever -n its
// command line says, and a later reload keeps it.
func TestScaleSurvivesReexec(t *testing.T) {
	m := startMaster(t, t.TempDir(), []string{"-n", "2", "--ready", "notify", "--reexec", "always"}, mworkerPath, "demo-worker")
	m.waitSettled(2, 15*time.Second)
	if code, out, errOut := m.ctl("scale", "3"); code != 0 {
		t.Fatalf("mworker scale 3: exit %d, %q %q", code, out, errOut)
	}
	m.waitSettled(3, 15*time.Second)
	for i := 1; i <= 2; i++ {
		if code, errOut := m.reload(); code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i, code, errOut)
		}
		s := m.waitSettled(3, 15*time.Second)
		if s.Master.Size != 3 || s.Master.Pid != m.pid {
			t.Fatalf("after re-exec %d: size %d, master pid %d; want 3 and %d", i, s.Master.Size, s.Master.Pid, m.pid)
		}
	}
	if log, _ := os.ReadFile(m.log); strings.Count(string(log), "re-executed; starting the new generation") != 2 {
		t.Errorf("the master did not re-execute twice:\n%s", lastLines(string(log), 30))
	}
}
