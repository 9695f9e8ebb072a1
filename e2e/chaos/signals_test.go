package chaos

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// signalsWorker is a worker that records the first of the signals it is
// given after $1 and $2 that it receives in the file $1 and exits 128+N, as
// a program that dies of that signal is reported. It writes $2 once every
// trap is set, so that the test
// signals nothing before the worker can tell what it got. Its sleeps are in
// its process group, which receives the forwarded signal too: they may die
// of it, the shell's trap runs all the same (and dash may append its
// report of the sleep's death to the file).
const signalsWorker = `#!/bin/sh
ulimit -c 0
got=$1 ready=$2
shift 2
for n in "$@"; do
	trap "echo got=$n > '$got'; exit $((128 + n))" $n
done
echo ready > "$ready"
while :; do
	sleep 1000 &
	wait $!
done
`

// signalsGot finds what signalsWorker recorded.
var signalsGot = regexp.MustCompile(`got=([0-9]+)`)

// TestSignalsFatalOnesForwarded sends each signal that the Go runtime
// treats as fatal or keeps for itself when nothing subscribes (SIGABRT,
// SIGSEGV and the other synchronous ones, sent with kill(2)), SIGPROF, and
// real-time signals to a master with one worker and --restart no. Each must
// reach the worker, whose exit status 128+N becomes the master's; the
// master must neither crash nor dump its goroutines.
func TestSignalsFatalOnesForwarded(t *testing.T) {
	t.Parallel()
	sigs := []syscall.Signal{syscall.SIGABRT, syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGFPE,
		syscall.SIGILL, syscall.SIGTRAP, syscall.SIGSYS, syscall.SIGPROF, syscall.SIGSTKFLT,
		syscall.Signal(32), syscall.Signal(34), syscall.Signal(40), syscall.Signal(64)}
	var list []string
	for _, s := range sigs {
		list = append(list, strconv.Itoa(int(s)))
	}
	worker := filepath.Join(t.TempDir(), "worker.sh")
	if err := e2etest.WriteExecutable(worker, signalsWorker); err != nil {
		t.Fatal(err)
	}
	for _, sig := range sigs {
		t.Run(strconv.Itoa(int(sig)), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			got, ready := filepath.Join(dir, "got"), filepath.Join(dir, "ready")
			m := startMaster(t, append([]string{"-n", "1", "--restart", "no", "--", worker, got, ready}, list...)...)
			e2etest.WaitFor(t, 30*time.Second, "the worker's traps", func() bool {
				_, err := os.Stat(ready)
				return err == nil || m.exited()
			})
			if m.exited() {
				t.Fatalf("master exited %d before the signal; log:\n%s", m.p.Status, m.logText())
			}
			if err := syscall.Kill(m.p.Pid, sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-m.p.Done:
			case <-time.After(30 * time.Second):
				t.Fatalf("master still running 30 s after signal %d; log:\n%s", sig, lastLines(m.logText(), 20))
			}
			log := m.logText()
			if strings.Contains(log, "goroutine ") {
				t.Errorf("master dumped its stacks on signal %d:\n%s", sig, lastLines(log, 30))
			}
			if ws := m.p.Cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
				t.Errorf("master killed by signal %d, want an exit with its worker's status", ws.Signal())
			}
			// A shell linked with the C library cannot trap 32, which the
			// library keeps for itself: the worker dies of it, and the
			// master's exit status 160 says so.
			b, _ := os.ReadFile(got)
			if m := signalsGot.FindStringSubmatch(string(b)); sig != 32 && (m == nil || m[1] != strconv.Itoa(int(sig))) {
				t.Errorf("worker recorded %q, want got=%d", b, sig)
			}
			if m.p.Status != 128+int(sig) {
				t.Errorf("master exited %d after signal %d, want %d (the worker's status); log:\n%s",
					m.p.Status, sig, 128+int(sig), lastLines(log, 20))
			}
		})
	}
}

// TestSignalsBrokenStderrPipe: a master whose stderr is a pipe with no
// reader left (a log collector that died) gets EPIPE, and SIGPIPE, for
// every line it logs; it must go on supervising and answering.
func TestSignalsBrokenStderrPipe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(mworkerPath, "run", "--control", ctl, "-n", "2", "--", "sleep", "1000")
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	})
	var pids []int
	e2etest.WaitFor(t, 30*time.Second, "two workers", func() bool {
		a, err := ask(ctl, "status", 2*time.Second)
		pids = currentPids(a)
		return err == nil && len(pids) == 2
	})
	r.Close()
	// Each crash and restart is logged, to the broken pipe.
	for i := 0; i < 3; i++ {
		syscall.Kill(pids[0], syscall.SIGKILL)
		e2etest.WaitFor(t, 30*time.Second, "a restart", func() bool {
			a, err := ask(ctl, "status", 2*time.Second)
			if err != nil {
				select {
				case <-done:
					t.Fatalf("master exited (%v) with its stderr broken", cmd.ProcessState)
				default:
				}
				return false
			}
			now := currentPids(a)
			if len(now) == 2 && !slices.Contains(now, pids[0]) {
				pids = now
				return true
			}
			return false
		})
	}
	select {
	case <-done:
		t.Fatalf("master exited (%v) with its stderr broken", cmd.ProcessState)
	default:
	}
}
