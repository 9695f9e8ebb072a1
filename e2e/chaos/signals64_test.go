package chaos

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
)

var sig64Rounds = flag.Int("chaos.sig64rounds", 1, "TestSignalsAll64 start phase: masters per signal, each signalled at another moment of its first 10 ms")

// recorderWorker appends the number of every signal it receives to the
// file $1, one a line, and creates $2 once every trap is set, with a
// redirection of its own: a forwarded signal goes to the worker's process
// group, and a command of the shell's still running there (the mv that
// once wrote $2: it had renamed the file and not yet exited when the test
// saw it) would stop on SIGTSTP, the shell waiting for it for ever
// without running a trap (1 in 40 runs under load).
// SIGTERM and SIGINT end it (128+N) after recording, so that a stop
// completes; it exits from its loop, not from the trap, so that the traps
// of signals pending with it run too (dash runs pending traps in number
// order: a SIG54 forwarded 10 ms before a reload's SIGTERM went
// unrecorded when the TERM trap exited, once under load). It traps every signal a shell linked with the C library can
// trap: all but 9, 19 and 32, 33 (the library's own); 32 ends it, with
// status 160. Its sleeps are in its process group and may die of a
// forwarded signal or stop; the shell's trap runs all the same.
const recorderWorker = `#!/bin/sh
ulimit -c 0
got=$1 ready=$2
stop=
n=1
while [ $n -le 64 ]; do
	case $n in
	9|19|32|33) ;;
	2|15) trap "echo $n >> '$got'; stop=$((128 + n))" $n ;;
	*) trap "echo $n >> '$got'" $n ;;
	esac
	n=$((n + 1))
done
: > "$ready"
while [ -z "$stop" ]; do
	sleep 1000 &
	wait $!
done
exit $stop
`

// sig64 is one master of TestSignalsAll64 with its workers' files.
type sig64 struct {
	*master
	wdir string // the workers' files: GOT.PID and READY.PID
}

func startSig64(t *testing.T, worker string, args ...string) *sig64 {
	t.Helper()
	return startSig64Attr(t, &syscall.SysProcAttr{Setpgid: true}, worker, args...)
}

func startSig64Attr(t *testing.T, sys *syscall.SysProcAttr, worker string, args ...string) *sig64 {
	t.Helper()
	wdir := t.TempDir()
	m := startMasterAttr(t, sys, append(args, "--", "/bin/sh", "-c", `exec "$0" "$1.$$" "$2.$$"`, worker,
		filepath.Join(wdir, "GOT"), filepath.Join(wdir, "READY"))...)
	s := &sig64{master: m, wdir: wdir}
	t.Cleanup(s.killWorkers)
	return s
}

// workerPids are the pids of the workers that set their traps.
func (s *sig64) workerPids() []int {
	ents, _ := filepath.Glob(filepath.Join(s.wdir, "READY.*"))
	var pids []int
	for _, e := range ents {
		if strings.HasSuffix(e, ".tmp") {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Ext(e), ".")); err == nil {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// killWorkers kills the process group of every worker: they trap SIGTERM,
// the parent-death signal, and some have stopped sleeps.
func (s *sig64) killWorkers() {
	for _, pid := range s.workerPids() {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// writeRecorder writes recorderWorker to a file of the test's.
func writeRecorder(t *testing.T) string {
	worker := filepath.Join(t.TempDir(), "recorder.sh")
	if err := e2etest.WriteExecutable(worker, recorderWorker); err != nil {
		t.Fatal(err)
	}
	return worker
}

// gotFile is where worker pid records its signals.
func (s *sig64) gotFile(pid int) string {
	return filepath.Join(s.wdir, "GOT."+strconv.Itoa(pid))
}

// received are the signals worker pid recorded.
func (s *sig64) received(pid int) map[int]bool {
	b, _ := os.ReadFile(s.gotFile(pid))
	out := map[int]bool{}
	for _, l := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(l); err == nil {
			out[n] = true
		}
	}
	return out
}

// checkAlive fails the test if the master exited or dumped its stacks.
func (s *sig64) checkAlive(t *testing.T, what string) {
	t.Helper()
	if s.exited() {
		t.Fatalf("%s: master exited %d; log:\n%s", what, s.p.Status, lastLines(s.logText(), 30))
	}
	checkNoDump(t, s.master, what)
}

func checkNoDump(t *testing.T, m *master, what string) {
	t.Helper()
	if log := m.logText(); strings.Contains(log, "goroutine ") || strings.Contains(log, "SIGQUIT: quit") {
		t.Fatalf("%s: master dumped its stacks:\n%s", what, lastLines(log, 30))
	}
}

// waitExit waits for the master to exit and checks it was not killed by a
// signal and dumped nothing.
func (s *sig64) waitExit(t *testing.T, what string) int {
	t.Helper()
	select {
	case <-s.p.Done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: master still running after 30 s; log:\n%s", what, lastLines(s.logText(), 30))
	}
	if ws := s.p.Cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
		t.Fatalf("%s: master killed by signal %d; log:\n%s", what, ws.Signal(), lastLines(s.logText(), 30))
	}
	checkNoDump(t, s.master, what)
	return s.p.Status
}

// forwarded are the signals of 1..64 whose route is forward and that the
// recorder can trap.
func forwarded() []int {
	var out []int
	for n := 1; n <= 64; n++ {
		if fsm.RouteOf(fsm.Signal(n)) == fsm.RouteForward && n != 32 {
			out = append(out, n)
		}
	}
	return out
}

// TestSignalsAll64 sends every signal 1..64 but SIGKILL and SIGSTOP to a
// master: at rest, during a reload, and within the first 10 ms of its
// start. The master must never crash nor dump its stacks; a reload signal
// reloads, a stop signal stops the workers the documented way and the
// master exits, an ignored one (SIGCHLD, SIGPIPE, SIGURG, 33) changes
// nothing, and every other one reaches the current workers (32, which the
// shell cannot trap, ends the worker with status 160).
func TestSignalsAll64(t *testing.T) {
	t.Parallel()
	worker := writeRecorder(t)
	t.Run("rest", func(t *testing.T) { t.Parallel(); sig64Rest(t, worker) })
	t.Run("reload", func(t *testing.T) { t.Parallel(); sig64Reload(t, worker) })
	t.Run("commands", func(t *testing.T) { t.Parallel(); sig64Commands(t, worker) })
	t.Run("start", func(t *testing.T) { t.Parallel(); sig64Start(t, worker) })
}

// sig64Rest: two workers at rest get every forwarded signal, sent in a
// burst; the ignored ones change nothing; 32 ends a worker, which is
// restarted.
func sig64Rest(t *testing.T, worker string) {
	s := startSig64(t, worker, "-n", "2", "--restart", "always")
	e2etest.WaitFor(t, 30*time.Second, "two workers' traps", func() bool { return len(s.workerPids()) == 2 || s.exited() })
	s.checkAlive(t, "start")
	pids := s.workerPids()
	fw := forwarded()
	// The stop signals (TSTP, TTIN, TTOU) stop the master once forwarded
	// (its group is not orphaned: the test is its parent), each followed
	// by SIGCONT; the rest in a burst.
	burst := slices.DeleteFunc(slices.Clone(fw), func(n int) bool { return n >= 18 && n <= 22 })
	for _, n := range []int{20, 21, 22} {
		syscall.Kill(s.p.Pid, syscall.Signal(n))
		e2etest.WaitFor(t, 30*time.Second, fmt.Sprintf("signal %d forwarded and the master stopped", n), func() bool {
			return s.received(pids[0])[n] && s.received(pids[1])[n] && e2etest.State(s.p.Pid) == 'T' || s.exited()
		})
		syscall.Kill(s.p.Pid, syscall.SIGCONT)
	}
	for _, n := range append(burst, 13, 17, 23, 33) {
		if err := syscall.Kill(s.p.Pid, syscall.Signal(n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, pid := range pids {
		ok := e2etest.Poll(30*time.Second, func() bool {
			got := s.received(pid)
			for _, n := range fw {
				if !got[n] {
					return false
				}
			}
			return true
		})
		if !ok {
			got := s.received(pid)
			var missing []int
			for _, n := range fw {
				if !got[n] {
					missing = append(missing, n)
				}
			}
			t.Errorf("worker %d never received %v; master log:\n%s", pid, missing, lastLines(s.logText(), 30))
		}
		if got := s.received(pid); got[23] || got[13] {
			t.Errorf("worker %d received SIGURG or SIGPIPE, documented as dropped: %v", pid, got)
		}
	}
	s.checkAlive(t, "the burst")
	// 32 ends a worker (status 160), which is restarted.
	syscall.Kill(s.p.Pid, 32)
	e2etest.WaitFor(t, 30*time.Second, "two workers replaced after signal 32", func() bool {
		now := s.workerPids()
		return s.exited() || len(now) == 4
	})
	s.checkAlive(t, "signal 32")
	if !strings.Contains(s.logText(), "160") && !strings.Contains(s.logText(), "signal 32") && !strings.Contains(s.logText(), "SIG32") {
		t.Errorf("no worker exit by signal 32 in the log:\n%s", lastLines(s.logText(), 20))
	}
}

// sig64Reload: each signal sent while a reload is under way (the new
// generation started, not yet ready) must not crash the master and must
// reach a worker of one generation or the other; the reload completes.
func sig64Reload(t *testing.T, worker string) {
	s := startSig64(t, worker, "-n", "1", "--ready", "300ms", "--restart", "always")
	e2etest.WaitFor(t, 30*time.Second, "the worker's traps", func() bool { return len(s.workerPids()) == 1 || s.exited() })
	s.checkAlive(t, "start")
	fw := forwarded()
	for i, n := range fw {
		before := s.workerPids()
		syscall.Kill(s.p.Pid, syscall.SIGUSR2)
		// The new generation set its traps: the reload is under way (it
		// is ready 300 ms after its start).
		e2etest.WaitFor(t, 30*time.Second, "a new worker", func() bool { return len(s.workerPids()) > len(before) || s.exited() })
		syscall.Kill(s.p.Pid, syscall.Signal(n))
		ok := e2etest.Poll(30*time.Second, func() bool {
			for _, pid := range s.workerPids() {
				if s.received(pid)[n] {
					return true
				}
			}
			return false
		})
		if n >= 20 && n <= 22 {
			// Forwarded, then the master stopped itself: continue it.
			e2etest.WaitFor(t, 30*time.Second, "the master stopped", func() bool { return e2etest.State(s.p.Pid) == 'T' || s.exited() })
			syscall.Kill(s.p.Pid, syscall.SIGCONT)
		}
		s.checkAlive(t, fmt.Sprintf("signal %d during reload %d", n, i+1))
		if !ok {
			t.Fatalf("signal %d during a reload reached no worker; log:\n%s", n, lastLines(s.logText(), 30))
		}
		// The reload completes: one current worker of generation i+2.
		e2etest.WaitFor(t, 30*time.Second, "the reload's end", func() bool {
			a, err := s.status(2 * time.Second)
			if err != nil || a.Master == nil {
				return s.exited()
			}
			cur := currentPids(a)
			return len(a.Workers) == 1 && len(cur) == 1 && a.Workers[0].Ready && a.Master.Generation >= i+2
		})
	}
	s.checkAlive(t, "the reloads")
	// The ignored ones during a reload.
	before := s.workerPids()
	syscall.Kill(s.p.Pid, syscall.SIGHUP)
	e2etest.WaitFor(t, 30*time.Second, "a new worker", func() bool { return len(s.workerPids()) > len(before) || s.exited() })
	for _, n := range []int{13, 17, 23, 33} {
		syscall.Kill(s.p.Pid, syscall.Signal(n))
	}
	// A stop during the reload: both generations get SIGTERM.
	syscall.Kill(s.p.Pid, syscall.SIGTERM)
	st := s.waitExit(t, "SIGTERM during a reload")
	for _, pid := range s.workerPids()[len(s.workerPids())-2:] {
		if !s.received(pid)[15] {
			t.Errorf("worker %d did not get SIGTERM from a stop during a reload", pid)
		}
	}
	t.Logf("SIGTERM during a reload: master exited %d", st)
}

// sig64Commands: each command signal at rest does what docs/signals.md
// says.
func sig64Commands(t *testing.T, worker string) {
	for _, tc := range []struct {
		sig    syscall.Signal
		reload bool
		// what every worker must receive, and the master's exit status
		// (the last worker's: 128 + what it got).
		gets int
	}{
		{syscall.SIGHUP, true, 0}, {syscall.SIGUSR2, true, 0},
		{syscall.SIGUSR1, false, 15}, {syscall.SIGTERM, false, 15}, {syscall.SIGINT, false, 2},
	} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			t.Parallel()
			s := startSig64(t, worker, "-n", "2", "--ready", "100ms")
			e2etest.WaitFor(t, 30*time.Second, "two workers' traps", func() bool { return len(s.workerPids()) == 2 || s.exited() })
			s.checkAlive(t, "start")
			a := s.waitServing(2, 30*time.Second)
			gen := a.Master.Generation
			old := s.workerPids()
			syscall.Kill(s.p.Pid, tc.sig)
			if tc.reload {
				e2etest.WaitFor(t, 30*time.Second, "a new generation", func() bool {
					a, err := s.status(2 * time.Second)
					return s.exited() || err == nil && a.Master != nil && a.Master.Generation > gen && len(a.Workers) == 2 && !slices.Contains(old, currentPids(a)[0])
				})
				s.checkAlive(t, tc.sig.String())
				for _, pid := range old {
					if !s.received(pid)[15] {
						t.Errorf("old worker %d did not get --stop-signal (TERM) after the reload", pid)
					}
				}
				return
			}
			st := s.waitExit(t, tc.sig.String())
			for _, pid := range old {
				if !s.received(pid)[tc.gets] {
					t.Errorf("worker %d did not get signal %d on master signal %v", pid, tc.gets, tc.sig)
				}
			}
			if st != 128+tc.gets {
				t.Errorf("master exited %d on %v, want %d (the last worker's status)", st, tc.sig, 128+tc.gets)
			}
		})
	}
}

// sig64Start: each signal sent in the first 10 ms of a master's life,
// from the moment its early catch (internal/earlysig, initialized right
// after the Go runtime) is in place, at a moment that differs from signal
// to signal. Before that, the kernel's default action and then, for a few
// milliseconds, the Go runtime's handling apply, as to any Go program; see
// docs/signals.md, "The master's first milliseconds". The master must not
// crash nor dump its stacks; a stop signal ends it; a reload signal and the
// others leave it running with its worker, and a forwarded one is either
// logged as forwarded (to no worker yet) or reaches the worker. A worker
// that has not set its traps yet meets the forwarded signal's default
// action: a deadly one ends it, and the master with it, with status 128+N
// (--restart no); a stop signal (TSTP, TTIN, TTOU) stops it, and the test
// continues it with SIGCONT.
func sig64Start(t *testing.T, worker string) {
	var sigs []int
	for n := 1; n <= 64; n++ {
		if n != 9 && n != 19 {
			sigs = append(sigs, n)
		}
	}
	started := regexp.MustCompile(`msg="worker started" pid=(\d+)`)
	for round := 0; round < *sig64Rounds; round++ {
		for i, n := range sigs {
			delay := time.Duration((i*7+round*3)%11) * time.Millisecond
			t.Run(fmt.Sprintf("%d@%v", n, delay), func(t *testing.T) {
				t.Parallel()
				// --stop-timeout: the worker's sleep outlives it in its
				// process group, which the master waits for that long.
				s := startSig64(t, worker, "-n", "1", "--ready", "immediate", "--restart", "no", "--stop-timeout", "2s")
				// Signal 34 is caught by the early catch, last, and by
				// nothing before it (the runtime leaves it at SIG_DFL).
				caught := e2etest.Poll(5*time.Second, func() bool { return sigCaught(s.p.Pid, 34) })
				if !caught {
					t.Fatalf("the master's early catch never caught signal 34; log:\n%s", s.logText())
				}
				time.Sleep(delay)
				if err := syscall.Kill(s.p.Pid, syscall.Signal(n)); err != nil {
					t.Fatal(err)
				}
				route := fsm.RouteOf(fsm.Signal(n))
				switch route {
				case fsm.RouteSoftStop, fsm.RouteTerminate:
					s.waitExit(t, fmt.Sprintf("signal %d", n))
					return
				}
				if route == fsm.RouteForward {
					name := fsm.Signal(n).String()
					forwarded := func() bool { return strings.Contains(s.logText(), "signal="+name+" ") }
					stops := n >= 20 && n <= 22
					ok := e2etest.Poll(10*time.Second, func() bool {
						pids := s.workerPids()
						return len(pids) >= 1 && s.received(pids[0])[n] || forwarded() || s.exited() || stops && e2etest.State(s.p.Pid) == 'T'
					})
					if !ok {
						t.Fatalf("signal %d neither forwarded nor reached the worker; log:\n%s", n, s.logText())
					}
					if stops {
						// Forwarded, then the master stopped itself (maybe
						// before its first log line was written): continue
						// it, and the forward shows.
						e2etest.WaitFor(t, 30*time.Second, "the master stopped", func() bool { return e2etest.State(s.p.Pid) == 'T' || s.exited() })
						syscall.Kill(s.p.Pid, syscall.SIGCONT)
						e2etest.WaitFor(t, 30*time.Second, fmt.Sprintf("signal %d forwarded", n), func() bool {
							pids := s.workerPids()
							return len(pids) >= 1 && s.received(pids[0])[n] || forwarded() || s.exited()
						})
					}
					if n == 32 {
						// The shell cannot trap it: it ends the worker,
						// and the run, with status 160.
						if st := s.waitExit(t, "signal 32"); st != 160 {
							t.Fatalf("signal 32: master exited %d, want 160; log:\n%s", st, s.logText())
						}
						return
					}
					// A worker stopped before its traps (TSTP, TTIN,
					// TTOU) is continued until it has set them.
					cont := func() {
						if m := started.FindStringSubmatch(s.logText()); m != nil && n >= 20 && n <= 22 && forwarded() {
							pid, _ := strconv.Atoi(m[1])
							syscall.Kill(-pid, syscall.SIGCONT)
						}
					}
					e2etest.WaitFor(t, 30*time.Second, "the worker's traps or the master's exit", func() bool {
						cont()
						return len(s.workerPids()) >= 1 || s.exited()
					})
					if len(s.workerPids()) == 0 {
						// The worker had not set its traps: the signal's
						// default action ended it, and the run.
						if st := s.waitExit(t, fmt.Sprintf("signal %d", n)); st != 128+n || !forwarded() ||
							!strings.Contains(s.logText(), "status=signal:"+name) {
							t.Fatalf("signal %d: master exited %d, want %d after the worker died of the forwarded signal; log:\n%s",
								n, st, 128+n, s.logText())
						}
						return
					}
				}
				e2etest.WaitFor(t, 30*time.Second, "the worker's traps", func() bool { return len(s.workerPids()) >= 1 || s.exited() })
				s.checkAlive(t, fmt.Sprintf("signal %d", n))
				syscall.Kill(s.p.Pid, syscall.SIGTERM)
				s.waitExit(t, "SIGTERM")
			})
		}
	}
}

// sigCaught says whether pid catches signal n (SigCgt in
// /proc/PID/status).
func sigCaught(pid, n int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(n-1)) != 0
		}
	}
	return false
}
