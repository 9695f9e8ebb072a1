package chaos

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// TestStopSignalsSuspendTheMaster ports dumb-init's
// test_shell_background_support_without_setsid: SIGTSTP, SIGTTIN and
// SIGTTOU sent to the master reach the workers, and then the master stops
// itself, as the kernel stops any process that leaves them at their
// default and as a shell expects of a job; SIGCONT continues it and
// reaches the workers. The test is the master's parent, in the same
// session and another process group: the master's group is not orphaned.
func TestStopSignalsSuspendTheMaster(t *testing.T) {
	t.Parallel()
	worker := writeRecorder(t)
	s := startSig64(t, worker, "-n", "2", "--log-level", "debug")
	e2etest.WaitFor(t, 30*time.Second, "two workers' traps", func() bool { return len(s.workerPids()) == 2 || s.exited() })
	s.checkAlive(t, "start")
	pids := s.workerPids()
	names := map[int]string{20: "TSTP", 21: "TTIN", 22: "TTOU"}
	for _, n := range []int{20, 21, 22} {
		syscall.Kill(s.p.Pid, syscall.Signal(n))
		if !e2etest.Poll(30*time.Second, func() bool {
			return s.received(pids[0])[n] && s.received(pids[1])[n] && e2etest.State(s.p.Pid) == 'T' || s.exited()
		}) {
			t.Fatalf("signal %d: after 30s, worker %d (%s) got %v, worker %d (%s) got %v, the master's state is %c; log:\n%s", n,
				pids[0], procState(pids[0]), s.received(pids[0]), pids[1], procState(pids[1]), s.received(pids[1]), e2etest.State(s.p.Pid), lastLines(s.logText(), 30))
		}
		s.checkAlive(t, "signal "+strconv.Itoa(n))
		// The master wrote its log before it stopped, not when continued.
		if line := `msg="forwarding signal to current workers" signal=` + names[n]; strings.Count(s.logText(), line) != 1 {
			t.Errorf("signal %d: the stopped master's log does not say once %s:\n%s", n, line, lastLines(s.logText(), 10))
		}
		os.Remove(s.gotFile(pids[0]))
		os.Remove(s.gotFile(pids[1]))
		syscall.Kill(s.p.Pid, syscall.SIGCONT)
		if !e2etest.Poll(30*time.Second, func() bool {
			return s.received(pids[0])[18] && s.received(pids[1])[18] && e2etest.State(s.p.Pid) != 'T' || s.exited()
		}) {
			t.Fatalf("SIGCONT after %d: after 30s, worker %d (%s) got %v, worker %d (%s) got %v, the master's state is %c; log:\n%s", n,
				pids[0], procState(pids[0]), s.received(pids[0]), pids[1], procState(pids[1]), s.received(pids[1]), e2etest.State(s.p.Pid), lastLines(s.logText(), 30))
		}
		if _, err := s.status(5 * time.Second); err != nil {
			t.Fatalf("the master does not answer after SIGCONT: %v; log:\n%s", err, lastLines(s.logText(), 20))
		}
	}
	syscall.Kill(s.p.Pid, syscall.SIGTERM)
	s.waitExit(t, "SIGTERM")
}

// TestStopSignalsOrphanedMasterRuns: a master whose process group is
// orphaned (a session of its own, as PID 1 of a container or a service:
// no shell could continue it) forwards SIGTSTP, SIGTTIN and SIGTTOU and
// goes on running, as the kernel would have it discard them; dumb-init
// would stop itself there for good.
func TestStopSignalsOrphanedMasterRuns(t *testing.T) {
	t.Parallel()
	worker := writeRecorder(t)
	s := startSig64Attr(t, &syscall.SysProcAttr{Setsid: true}, worker, "-n", "1")
	e2etest.WaitFor(t, 30*time.Second, "the worker's traps", func() bool { return len(s.workerPids()) == 1 || s.exited() })
	pid := s.workerPids()[0]
	for _, n := range []int{20, 21, 22} {
		syscall.Kill(s.p.Pid, syscall.Signal(n))
		e2etest.WaitFor(t, 30*time.Second, "the worker got signal "+strconv.Itoa(n), func() bool { return s.received(pid)[n] || s.exited() })
		s.checkAlive(t, "signal "+strconv.Itoa(n))
		// The master answers: it did not stop (a stopped master would
		// leave the request unanswered).
		if _, err := s.status(5 * time.Second); err != nil {
			t.Fatalf("signal %d: the master does not answer (state %c): %v; log:\n%s", n, e2etest.State(s.p.Pid), err, lastLines(s.logText(), 20))
		}
	}
	syscall.Kill(s.p.Pid, syscall.SIGTERM)
	s.waitExit(t, "SIGTERM")
}

// TestStopSignalsStopTheWorkers ports dumb-init's
// test_shell_background_support_setsid: a worker that leaves SIGTSTP,
// SIGTTIN and SIGTTOU at their default stops with the master, and both
// continue on SIGCONT. (dumb-init sends SIGSTOP to a child that leads a
// session of its own, whose group is orphaned; a worker's group is not,
// so the signal itself stops it.)
func TestStopSignalsStopTheWorkers(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "-n", "1", "--", "sleep", "1000")
	var worker int
	e2etest.WaitFor(t, 30*time.Second, "the worker", func() bool {
		a, err := m.status(2 * time.Second)
		if err == nil && len(a.Workers) == 1 {
			worker = a.Workers[0].Pid
		}
		return worker != 0 || m.exited()
	})
	for _, n := range []syscall.Signal{syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU} {
		syscall.Kill(m.p.Pid, n)
		e2etest.WaitFor(t, 30*time.Second, n.String()+": the master and the worker stopped", func() bool {
			return e2etest.State(m.p.Pid) == 'T' && e2etest.State(worker) == 'T' || m.exited()
		})
		syscall.Kill(m.p.Pid, syscall.SIGCONT)
		e2etest.WaitFor(t, 30*time.Second, n.String()+": both continued", func() bool {
			return e2etest.State(m.p.Pid) != 'T' && e2etest.State(worker) != 'T' || m.exited()
		})
		if m.exited() {
			t.Fatalf("the master exited; log:\n%s", lastLines(m.logText(), 20))
		}
	}
}

// procState describes pid and its children for a failure message: state,
// kernel wait channel and signal masks of each.
func procState(pid int) string {
	var out []string
	pids := []int{pid}
	for _, c := range e2etest.Children(pid) {
		pids = append(pids, c.Pid)
	}
	for _, p := range pids {
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status")
		var masks []string
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "Sig") || strings.HasPrefix(l, "ShdPnd") {
				masks = append(masks, strings.Join(strings.Fields(l), ""))
			}
		}
		out = append(out, fmt.Sprintf("%d %c %s %s", p, e2etest.State(p), e2etest.Wchan(p), strings.Join(masks, " ")))
	}
	return strings.Join(out, "; ")
}
