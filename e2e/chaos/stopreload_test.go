package chaos

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
)

var stopReloadTries = flag.Int("chaos.stopreload", 40, "tries of each stop-during-reload case")

// stopReloadWorker drains at once on SIGTERM, as issue 16 wrote it.
const stopReloadWorker = `trap "exit 0" TERM; while :; do sleep 0.05; done`

// TestStopDuringReload is issue 16: SIGUSR2 and, 0 to 10 ms later, a stop.
// Before, the master re-executed on every reload, and a SIGTERM or SIGINT
// in its re-exec window killed it (no drain, no exit status from the
// workers) or, caught just before execve, was lost: the master served on
// and never stopped. An ordinary reload (the binary unchanged) now starts
// the new generation in place: every stop, whatever the signal, drains
// and the master exits 0. An upgrade (a new binary at the start path)
// still re-executes: a stop is never lost (every thread holds the stop and
// reload signals pending from the last look at them to execve, and no
// thread starts in between: osadapter/holdexec.go), SIGUSR1 (the
// documented stop signal) always drains, and a SIGTERM or SIGINT that falls
// in the new image's first milliseconds kills it; those deaths are counted
// and logged.
func TestStopDuringReload(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		stop      syscall.Signal
		upgrade   bool
		mayKillIt bool
	}{
		{"USR1", syscall.SIGUSR1, false, false},
		{"TERM", syscall.SIGTERM, false, false},
		{"INT", syscall.SIGINT, false, false},
		{"upgrade/USR1", syscall.SIGUSR1, true, false},
		{"upgrade/TERM", syscall.SIGTERM, true, true},
		{"upgrade/INT", syscall.SIGINT, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			deaths := 0
			for i := range *stopReloadTries {
				switch outcome := stopDuringReload(t, tc.stop, tc.upgrade, i); {
				case outcome == "drained":
				case outcome == "died":
					deaths++
					if !tc.mayKillIt {
						t.Errorf("try %d: the master died of the stop signal instead of draining", i)
					}
				default:
					t.Fatalf("try %d: %s", i, outcome)
				}
			}
			t.Logf("%d tries: %d drained, %d master deaths, 0 lost stops", *stopReloadTries, *stopReloadTries-deaths, deaths)
		})
	}
}

// stopDuringReload runs one try and says how it ended: "drained" (exit 0
// after "all workers gone"), "died" (killed by the stop signal), or what
// went wrong.
func stopDuringReload(t *testing.T, stop syscall.Signal, upgrade bool, try int) string {
	dir := t.TempDir()
	bin := mworkerPath
	if upgrade {
		bin = filepath.Join(dir, "mworker")
		if err := e2etest.CopyFile(mworkerPath, bin); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "master.log")
	p, err := e2etest.StartLogged(log, bin, "run", "-n", "2", "--ready", "200ms", "--stop-timeout", "5s",
		"--", "/bin/sh", "-c", stopReloadWorker)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		select {
		case <-p.Done:
		default:
			p.Cmd.Process.Kill()
			<-p.Done
		}
	}()
	logText := func() string { return readFile(log) }
	if !e2etest.Poll(20*time.Second, func() bool { return strings.Contains(logText(), "all workers ready") }) {
		return "the first generation was not ready in 20 s; log:\n" + lastLines(logText(), 20)
	}
	if upgrade {
		// A new file at the start path: another inode, as a package
		// upgrade installs it.
		if err := e2etest.CopyFile(mworkerPath, bin); err != nil {
			t.Fatal(err)
		}
	}
	// The injected delay: 0..10 ms, as issue 16 measured it; an upgrade
	// first runs the takeover check (several ms), so its re-exec window
	// comes later: 0..30 ms covers both.
	maxDelay := 10_000
	if upgrade {
		maxDelay = 30_000
	}
	p.Cmd.Process.Signal(syscall.SIGUSR2)
	time.Sleep(time.Duration(rand.IntN(maxDelay+1)) * time.Microsecond)
	p.Cmd.Process.Signal(stop)
	select {
	case <-p.Done:
	case <-time.After(20 * time.Second):
		return fmt.Sprintf("the stop was lost: the master still runs 20 s after SIG%s; log:\n%s", fsm.Signal(stop), lastLines(logText(), 30))
	}
	ws := p.Cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && ws.Signal() == stop:
		t.Logf("try %d: master killed by SIG%s; log:\n%s", try, fsm.Signal(stop), lastLines(logText(), 8))
		return "died"
	case ws.Signaled() || !strings.Contains(logText(), "all workers gone"):
		return fmt.Sprintf("the master ended with status %d without draining; log:\n%s", p.Status, lastLines(logText(), 30))
	}
	// The workers trap TERM and exit 0; SIGINT kills them (130): the
	// master exits with the first failure of its current workers. On a
	// loaded machine a worker may get TERM before its shell has set the
	// trap (seen in CI: 360 ms after its start) and die of it: 143, still
	// a drain.
	want := []int{0, 128 + int(syscall.SIGTERM)}
	if stop == syscall.SIGINT {
		want = []int{130}
	}
	if !slices.Contains(want, p.Status) {
		return fmt.Sprintf("the master exited %d, want one of %v; log:\n%s", p.Status, want, lastLines(logText(), 30))
	}
	return "drained"
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
