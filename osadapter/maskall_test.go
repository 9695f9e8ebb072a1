package osadapter

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// threadMasks reads SigBlk of every thread of this process.
func threadMasks(t *testing.T) map[int]uint64 {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]uint64{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/status", tid))
		if err != nil {
			continue // exited meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "SigBlk:"); ok {
				m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if err != nil {
					t.Fatalf("thread %d: SigBlk %q: %v", tid, v, err)
				}
				out[tid] = m
			}
		}
	}
	return out
}

// Blocking a signal in every thread must last: the kernel must show it in
// each thread's mask after the call returns, not only while the call runs.
// (syscall.AllThreadsSyscall, used before, runs the call inside a signal
// handler, and the return from the handler restores the thread's old mask:
// 5 of 6 threads did not block after it.)
func TestBlockAllThreadsLasts(t *testing.T) {
	// Busy goroutines, so that the runtime runs several threads.
	stop := make(chan struct{})
	defer close(stop)
	for range 4 {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					syscall.Getppid()
					_ = make([]byte, 1024)
				}
			}
		}()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	set := sigset(syscall.SIGUSR2, syscall.SIGTERM)
	bit := set.Val[0]
	// Outside the runtime's exec lock (holdExec takes it), a thread may
	// start after the last pass, with the runtime's mask for new threads:
	// the check is on the threads the passes reached, which must be all
	// that existed before the call.
	before := threadMasks(t)
	m, err := newThreadMasker()
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	check := func(what string, want uint64) {
		t.Helper()
		reached := map[int]bool{int(m.self): true}
		for _, tid := range m.seen[:m.nseen] {
			reached[int(tid)] = true
		}
		for tid := range before {
			if _, alive := threadMasks(t)[tid]; alive && !reached[tid] {
				t.Errorf("%s: thread %d, there before the call, was not reached", what, tid)
			}
		}
		var bad []string
		n := 0
		for tid, mask := range threadMasks(t) {
			if !reached[tid] || tid == int(m.self) {
				continue
			}
			n++
			if mask&bit != want {
				bad = append(bad, fmt.Sprintf("%d:%x", tid, mask))
			}
		}
		if n < 1 {
			t.Fatalf("%s: no other thread reached: a Go program with busy goroutines runs several", what)
		}
		if len(bad) > 0 {
			t.Errorf("%s: %d of %d threads reached have mask bits %v for %x, want %x", what, len(bad), n, bad, bit, want)
		}
	}
	if _, err := m.change(bit, 0, false); err != nil {
		t.Fatalf("block: %v", err)
	}
	check("after the block", bit)
	if _, err := m.change(0, bit, false); err != nil {
		t.Fatalf("unblock: %v", err)
	}
	check("after the unblock", 0)
}

// With a signal blocked in every thread, one sent to the process stays
// pending and unblocking delivers it; holdExec relies on both (the pending
// stop it finds abandons the exec and is then delivered).
func TestBlockAllThreadsHoldsASignalPending(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR2)
	defer signal.Stop(ch)
	set := sigset(syscall.SIGUSR2)
	if err := blockAllThreads(&set); err != nil {
		t.Fatalf("blockAllThreads: %v", err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		unblockAllThreads(&set)
		t.Fatal(err)
	}
	var pending uint64
	unix.RawSyscall(unix.SYS_RT_SIGPENDING, uintptr(unsafe.Pointer(&pending)), kernelSigsetSize, 0)
	select {
	case <-ch:
		unblockAllThreads(&set)
		t.Fatal("SIGUSR2 was delivered while blocked in every thread")
	default:
	}
	if pending&set.Val[0] == 0 {
		unblockAllThreads(&set)
		t.Fatalf("SIGUSR2 sent while blocked in every thread is not pending: %x", pending)
	}
	if err := unblockAllThreads(&set); err != nil {
		t.Fatalf("unblockAllThreads: %v", err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGUSR2 not delivered after unblockAllThreads")
	}
}

// holdExec does not exec with a stop pending: it answers which one, and the
// signal stays pending (blocked in every thread) until unblocked.
func TestHoldExecRefusesWithAStopPending(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT)
	defer signal.Stop(ch)
	var old unix.Sigset_t
	unix.PthreadSigmask(unix.SIG_BLOCK, nil, &old)
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	held := sigset(execHeld...)
	if err := blockAllThreads(&held); err != nil {
		t.Fatal(err)
	}
	// Sent to this thread, which blocks it: a thread the runtime starts
	// meanwhile (it does, now and then) would take one sent to the process.
	unix.Tgkill(os.Getpid(), unix.Gettid(), syscall.SIGINT)
	err := holdExec("/nonexistent/mworker", []string{"x"}, nil, &held)
	unblockAllThreads(&held)
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	var stop *stopPendingError
	if !errors.As(err, &stop) || stop.sig != syscall.SIGINT {
		t.Fatalf("holdExec with SIGINT pending: %v, want a stopPendingError for SIGINT", err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("the pending SIGINT was not delivered once unblocked")
	}
	// Nothing pending: the exec is tried, and fails on the missing path.
	err = holdExec("/nonexistent/mworker", []string{"x"}, nil, &held)
	unblockAllThreads(&held)
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("holdExec of a missing path: %v, want ENOENT", err)
	}
}

// BenchmarkBlockAllThreads is what an upgrade's re-exec adds to hold the
// stop and reload signals: a block and an unblock in every thread.
func BenchmarkBlockAllThreads(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	set := sigset(execHeld...)
	for b.Loop() {
		if err := blockAllThreads(&set); err != nil {
			b.Fatal(err)
		}
		if err := unblockAllThreads(&set); err != nil {
			b.Fatal(err)
		}
	}
	if ents, err := os.ReadDir("/proc/self/task"); err == nil {
		b.ReportMetric(float64(len(ents)), "threads")
	}
}
