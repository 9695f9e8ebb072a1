package podman

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// TestImage runs the image of docs/containers.md: it serves, reloads by
// "podman exec CT mworker reload" and by "podman kill --signal USR2",
// and "podman stop" drains: a slow request in flight is answered, and the
// container exits 0.
func TestImage(t *testing.T) {
	t.Parallel()
	requireImage(t)
	c := runContainer(t)
	c.waitGeneration("1")
	if pid1 := c.podman("top", c.name, "pid", "args"); !strings.Contains(pid1, "1 ") || !strings.Contains(pid1, "mworker run") {
		t.Logf("podman top:\n%s", pid1)
	}

	c.podman("exec", c.name, "/usr/local/bin/mworker", "reload", "--control", built.control)
	c.waitGeneration("2")
	c.podman("kill", "--signal", "USR2", c.name)
	c.waitGeneration("3")

	// A request that takes 2s is in flight (its header is sent at once)
	// when podman stop sends the STOPSIGNAL: it is answered, then the
	// container exits 0.
	resp, err := c.get("/?sleep=2s", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	body := make(chan string, 1)
	go func() {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			b = append(b, []byte(" ERROR: "+err.Error())...)
		}
		body <- string(b)
	}()
	code, took := c.stop()
	if b := <-body; generation(b) != "3" || strings.Contains(b, "ERROR") {
		t.Errorf("the request in flight during podman stop got %q, want the answer of generation 3", b)
	}
	if code != 0 {
		t.Errorf("podman stop: the container exited %d, want 0 (every worker drained)\n%s", code, c.logs(30))
	}
	t.Logf("podman stop took %v with a 2s request in flight; exit code %d", took.Round(time.Millisecond), code)
}

// TestWorkerIgnoringTerm: a worker that ignores the stop is SIGKILLed by
// mworker after --stop-timeout (within podman stop's grace period, so it
// is mworker that says what happened), and the container exits 137.
func TestWorkerIgnoringTerm(t *testing.T) {
	t.Parallel()
	requireImage(t)
	c := runContainer(t, "-e", "E2E_APP=ignore-term")
	e2etest.WaitFor(t, 30*time.Second, "the workers to say READY=1", func() bool {
		return strings.Contains(c.logs(1000), "all workers ready")
	})
	code, took := c.stop()
	logs := c.logs(1000)
	if code != 137 || !strings.Contains(logs, "stop timeout passed; killing") {
		t.Fatalf("a worker ignoring SIGTERM: exit code %d after %v, want 137 with mworker's \"stop timeout passed; killing\" in the log:\n%s", code, took, tail(logs, 30))
	}
	t.Logf("podman stop took %v; exit code %d; mworker killed the worker after its --stop-timeout", took.Round(time.Millisecond), code)
}

// stopDuringReloadTries is how many times each TestStopDuringReload
// stops the container right after asking for a reload.
const stopDuringReloadTries = 30

// TestStopDuringReload: a reload by signal, then at once a stop, 30
// times. Every stop must drain: the container exits 0 with mworker's
// "all workers gone", never killed by the stop signal during its reload
// (exit 128+N) and never waiting out podman's grace period (a lost stop,
// then SIGKILL: 137). "podman kill --signal USR2 CT; podman stop CT" is
// what the issue measured; podman's own start-up (tens of milliseconds)
// puts the stop well after the master's re-exec window, so the second
// run starts both commands at once, landing the stop signal before,
// inside and after the window.
func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	requireImage(t)
	for _, concurrent := range []bool{false, true} {
		name := map[bool]string{false: "sequential", true: "concurrent"}[concurrent]
		t.Run(name, func(t *testing.T) { stopDuringReload(t, concurrent) })
	}
}

func stopDuringReload(t *testing.T, concurrent bool) {
	c := runContainer(t)
	e2etest.WaitFor(t, 30*time.Second, "every worker to be ready", func() bool {
		return strings.Contains(c.logs(1000), "all workers ready")
	})
	deaths, lost, unclean := 0, 0, 0
	codes := map[int]int{}
	start := time.Now()
	tries, seenExits, seenLog := 0, 0, 0
	for i := 1; i <= stopDuringReloadTries; i++ {
		tries = i
		killed := make(chan string, 1)
		kill := func() {
			if out, err := podman("kill", "--signal", "USR2", c.name); err != nil {
				killed <- fmt.Sprintf("podman kill --signal USR2: %v %s", err, strings.TrimSpace(out))
				return
			}
			killed <- ""
		}
		if concurrent {
			go kill()
		} else {
			kill()
		}
		code, took := c.stop()
		if err := <-killed; err != "" && !concurrent {
			t.Fatalf("try %d: %s", i, err)
		}
		// Concurrent, the stop may have ended the container before the
		// kill: podman kill then fails, which is no failure of mworker.
		codes[code]++
		logs, _ := podman("logs", c.name)
		this := logs[min(seenLog, len(logs)):]
		seenLog = len(logs)
		exits := strings.Count(logs, "all workers gone; exiting") - seenExits
		seenExits += exits
		switch {
		case code == 137 && took >= 25*time.Second:
			lost++
			t.Logf("try %d: the stop was lost: podman SIGKILLed PID 1 after %v; this run's log ends:\n%s", i, took.Round(time.Millisecond), tail(this, 15))
		case exits != 1:
			deaths++
			t.Logf("try %d: exit code %d after %v, without mworker's \"all workers gone\": the master died; this run's log ends:\n%s", i, code, took.Round(time.Millisecond), tail(this, 15))
		case code != 0:
			unclean++
			t.Logf("try %d: exit code %d after %v (mworker exited by itself; a worker did not drain); this run's log ends:\n%s", i, code, took.Round(time.Millisecond), tail(this, 15))
		}
		if lost >= 3 {
			t.Errorf("stopping after %d tries: %d stops lost, each waits podman's grace period", i, lost)
			break
		}
		c.podman("start", c.name)
		// Every worker of the new run must be ready before the next
		// try: a stop during the start is another story.
		e2etest.WaitFor(t, 30*time.Second, "every worker of the restarted container to be ready", func() bool {
			logs, _ := podman("logs", c.name)
			return strings.Contains(logs[min(seenLog, len(logs)):], "all workers ready")
		})
	}
	t.Logf("%d × podman kill --signal USR2 %s podman stop in %v: %d master deaths, %d lost stops, %d other non-zero exits; exit codes %v",
		tries, map[bool]string{false: ";", true: "&"}[concurrent], time.Since(start).Round(100*time.Millisecond), deaths, lost, unclean, codes)
	if deaths > 0 || lost > 0 || unclean > 0 {
		t.Errorf("a stop during a reload must drain: %d master deaths, %d lost stops, %d other non-zero exits in %d tries", deaths, lost, unclean, tries)
	}
}
