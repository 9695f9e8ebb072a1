package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/e2etest"
)

// A log reader that stops reading (a hung journald or docker log driver, a
// terminal on hold) must not freeze supervision: the master once blocked in
// write(2) as soon as its stderr pipe was full, and then reaped nothing,
// restarted nothing, acted on no signal and answered no status (issue 12,
// item 2).
func TestStalledStderrDoesNotFreezeTheMaster(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	p := newStderrPipe(t)
	// The pipe is full before the master writes its first line.
	p.fill(t)

	// --reexec always: each reload re-executes, and what the queue still
	// holds at the execve is dropped and counted (an in-place reload
	// would only queue a few KiB of its 1 MiB).
	cmd := exec.Command(mworkerPath, "run", "--control", ctl, "--log-level", "debug", "--ready", "immediate",
		"--reexec", "always", "-n", "2", "--", "/bin/sleep", "1000")
	cmd.Stdout, cmd.Stderr = p.w, p.w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	exited := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	t.Cleanup(func() {
		if !exited() {
			cmd.Process.Signal(os.Kill)
			<-done
		}
	})

	// Two ready workers, answered while nothing reads the log.
	var pids []int
	if !e2etest.Poll(10*time.Second, func() bool {
		a, err := ask(ctl, "status", time.Second)
		if err != nil || a.Master == nil {
			return false
		}
		pids = currentPids(a)
		return len(pids) == 2 && !exited()
	}) {
		t.Fatalf("no status with 2 current workers in 10 s while stderr was stalled (exited: %v)", exited())
	}

	// Two reloads: each image's lines that the pipe could not take before
	// the execve are lost, and counted.
	for i := range 2 {
		if a, err := ask(ctl, "reload", 10*time.Second); err != nil || !a.OK {
			t.Fatalf("reload %d while stderr was stalled: %+v, %v", i+1, a, err)
		}
	}

	// The acceptance: status within 100 ms while stderr is stalled.
	var slow []time.Duration
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		a, err := ask(ctl, "status", 2*time.Second)
		took := time.Since(start)
		slowest = max(slowest, took)
		if err != nil || a.Master == nil {
			t.Fatalf("status while stderr was stalled: %v", err)
		}
		if took > 100*time.Millisecond {
			slow = append(slow, took)
		}
	}
	if len(slow) > 0 {
		t.Errorf("%d of 20 status calls took over 100 ms while stderr was stalled: %v", len(slow), slow)
	}
	t.Logf("slowest of 20 status calls with stderr stalled: %v", slowest)

	// A killed worker is reaped and its slot restarted. The victim is a
	// current worker, once the old ones are gone.
	var victim control.Worker
	e2etest.WaitFor(t, 10*time.Second, "2 current workers and no old one", func() bool {
		a, err := ask(ctl, "status", time.Second)
		if err != nil || len(a.Workers) != 2 || !a.Workers[0].Current || !a.Workers[1].Current {
			return false
		}
		victim = a.Workers[0]
		return true
	})
	syscall.Kill(victim.Pid, syscall.SIGKILL)
	e2etest.WaitFor(t, 10*time.Second, fmt.Sprintf("slot %d to get a new worker after pid %d was killed", victim.Slot, victim.Pid), func() bool {
		a, err := ask(ctl, "status", time.Second)
		if err != nil {
			return false
		}
		for _, w := range a.Workers {
			if w.Current && w.Slot == victim.Slot && w.Pid != victim.Pid && w.Ready {
				return true
			}
		}
		return false
	})

	a, err := ask(ctl, "status", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dropped_log_lines %d", a.Master.DroppedLogLines)
	if a.Master.DroppedLogLines <= 0 {
		t.Errorf("status shows dropped_log_lines %d after two reloads with stderr stalled, want > 0", a.Master.DroppedLogLines)
	}

	// The reader catches up: the master says what it lost.
	p.read()
	e2etest.WaitFor(t, 10*time.Second, "the master to log the lines it dropped", func() bool {
		return strings.Contains(p.text(), "log lines dropped: stderr was not being read")
	})

	// Stalled again, SIGTERM still stops the master.
	p.pause()
	p.fill(t)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("SIGTERM did not stop the master in 20 s while stderr was stalled")
	}
}

// stderrPipe is a pipe for a master's stdout and stderr, which the test
// reads only when it wants to.
type stderrPipe struct {
	r, w *os.File
	// nb is another open file description of the write end, non-blocking,
	// for the test's own filler: O_NONBLOCK on w itself would be shared
	// with the master.
	nb int

	mu      sync.Mutex
	got     bytes.Buffer
	stop    atomic.Bool
	stopped chan struct{}
}

func newStderrPipe(t *testing.T) *stderrPipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &stderrPipe{r: r, w: w}
	// w.Fd puts w back in blocking mode, as a log pipe is.
	p.nb, err = unix.Open(fmt.Sprintf("/proc/self/fd/%d", w.Fd()), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.pause()
		unix.Close(p.nb)
		r.Close()
		w.Close()
	})
	return p
}

// fill writes filler lines until the pipe takes no more.
func (p *stderrPipe) fill(t *testing.T) {
	t.Helper()
	line := []byte(strings.Repeat("f", 63) + "\n")
	buf := slices.Repeat(line, 64)
	total := 0
	for {
		n, err := unix.Write(p.nb, buf)
		if n > 0 {
			total += n
		}
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			t.Fatalf("fill the stderr pipe: %v", err)
		}
	}
	if total == 0 {
		t.Fatalf("the stderr pipe took nothing: it was full already")
	}
}

// read starts reading the pipe in the background until pause.
func (p *stderrPipe) read() {
	p.stop.Store(false)
	p.stopped = make(chan struct{})
	go func() {
		defer close(p.stopped)
		buf := make([]byte, 64<<10)
		for !p.stop.Load() {
			p.r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			n, err := p.r.Read(buf)
			p.mu.Lock()
			p.got.Write(buf[:n])
			p.mu.Unlock()
			if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
}

// pause stops reading, if the test was reading.
func (p *stderrPipe) pause() {
	if p.stopped == nil {
		return
	}
	p.stop.Store(true)
	<-p.stopped
	p.stopped = nil
}

// text is what was read so far.
func (p *stderrPipe) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got.String()
}
