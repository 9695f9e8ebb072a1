package main

import (
	"strings"
	"testing"
)

// A worker that always fails makes the master give up at --restart-limit:
// it exits with the worker's status and says why, so that systemd's
// Restart= or the container runtime takes over.
func TestRestartLimitEndsTheRun(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", "", "--restart-limit", "3/10s", "--backoff", "10ms..50ms", "--", "sh", "-c", "exit 7")
	if got := m.wait(exitTimeout); got != 7 {
		t.Fatalf("master exited %d, want 7 (the failing worker's status)\n%s", got, m.logText())
	}
	// The master has exited: its log is complete.
	var line string
	for _, l := range strings.Split(m.logText(), "\n") {
		if strings.Contains(l, "restart limit reached") {
			line = l
		}
	}
	if !strings.Contains(line, "restart-limit=3/10s") || !strings.Contains(line, "exit:7") {
		t.Errorf("no log line names the limit (3/10s) and the worker's status (exit:7): %q\n%s", line, m.logText())
	}
}

// Workers that die as soon as they start earn one warning with the likely
// causes, however many times they die.
func TestQuickDeathWarnsOnce(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", "", "--restart-limit", "8/1m", "--backoff", "10ms..20ms", "--", "sh", "-c", "exit 3")
	if got := m.wait(exitTimeout); got != 3 {
		t.Fatalf("master exited %d, want 3 (the failing worker's status)\n%s", got, m.logText())
	}
	log := m.logText()
	if n := strings.Count(log, "worker exited"); n < 8 {
		t.Fatalf("%d worker exits logged, want 8 before the limit\n%s", n, log)
	}
	if n := strings.Count(log, "keep dying within a second"); n != 1 {
		t.Errorf("the quick-death warning was logged %d times, want once\n%s", n, log)
	}
	if !strings.Contains(log, "fd 3") || !strings.Contains(log, "address already in use") {
		t.Errorf("the quick-death warning does not name the likely causes\n%s", log)
	}
}
