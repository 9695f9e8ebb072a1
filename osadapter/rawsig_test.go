package osadapter

import (
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests run this package's hand-written handlers (rawsig_GOARCH.s)
// in the test process itself, without starting a master: they are the
// ones scripts/arm64-qemu.sh runs on arm64 under qemu-user, where an
// exec of an arm64 binary fails.

// getAction reads signal s's action as the kernel keeps it.
func getAction(t *testing.T, s syscall.Signal) sigaction {
	t.Helper()
	var old sigaction
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), 0, uintptr(unsafe.Pointer(&old)), kernelSigsetSize, 0, 0); e != 0 {
		t.Fatalf("rt_sigaction(%d): %v", s, e)
	}
	return old
}

func putAction(s syscall.Signal, sa sigaction) {
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), 0, kernelSigsetSize, 0, 0)
}

// withRawSignals runs catchRaw for the test, and gives the raw signals
// their actions back and closes the pipe when it ends.
func withRawSignals(t *testing.T) chan os.Signal {
	t.Helper()
	if rawSigFd != 0 {
		t.Fatalf("the raw signals' pipe is already open (fd %d): a test that did not clean up", rawSigFd)
	}
	old := map[syscall.Signal]sigaction{}
	for _, s := range rawSignals {
		old[s] = getAction(t, s)
	}
	ch := make(chan os.Signal, 64)
	if err := catchRaw(ch); err != nil {
		t.Fatalf("catchRaw: %v", err)
	}
	t.Cleanup(func() {
		for s, sa := range old {
			putAction(s, sa)
		}
		// The reading goroutine ends on EOF.
		unix.Close(int(rawSigFd))
		rawSigFd = 0
	})
	return ch
}

// Each raw signal sent with kill(2) goes through the raw handler and the
// pipe to the channel, with its own number.
func TestRawHandlerForwardsEachSignal(t *testing.T) {
	ch := withRawSignals(t)
	for _, s := range rawSignals {
		if got := getAction(t, s); got.handler != rawSigHandlerPC {
			t.Fatalf("signal %d: handler %#x, want the raw one %#x", s, got.handler, rawSigHandlerPC)
		}
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ch:
			if got != s {
				t.Fatalf("sent signal %d, the channel got %v", s, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("signal %d sent to the process never reached the channel", s)
		}
	}
}

// catchForExec takes the signals an upgrade must not lose onto a pipe of
// their own, and undo gives them back with what was caught meanwhile.
func TestCatchForExecThenUndo(t *testing.T) {
	withRawSignals(t)
	before := map[syscall.Signal]sigaction{}
	for _, s := range execSignals {
		before[s] = getAction(t, s)
	}
	c, err := catchForExec()
	if err != nil {
		t.Fatalf("catchForExec: %v", err)
	}
	for _, s := range execSignals {
		if got := getAction(t, s); got.handler != rawSigHandlerPC {
			c.undo()
			t.Fatalf("signal %d: handler %#x during the exec window, want the raw one %#x", s, got.handler, rawSigHandlerPC)
		}
	}
	// The stop signals would end the test process if anything went wrong:
	// the reload ones show the way.
	sent := []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2}
	for _, s := range sent {
		syscall.Kill(os.Getpid(), s)
	}
	ok := pollUntil(10*time.Second, func() bool {
		n, err := unix.IoctlGetInt(c.r, unix.TIOCINQ) // FIONREAD
		return err == nil && n >= len(sent)
	})
	got := c.undo()
	if !ok {
		t.Fatalf("the exec window's pipe got %v, want %v", got, sent)
	}
	slices.Sort(got)
	if !slices.Equal(got, sent) {
		t.Fatalf("the exec window's pipe got %v, want %v", got, sent)
	}
	for _, s := range execSignals {
		if got := getAction(t, s); got.handler != before[s].handler {
			t.Errorf("signal %d: handler %#x after undo, want %#x as before", s, got.handler, before[s].handler)
		}
	}
}

func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// The mask handler changes the mask the kernel restores when it returns:
// the thread it ran on sees the change in its own mask afterwards
// (rt_sigprocmask), which checks the handler's ucontext offset on this
// architecture. Unlike TestBlockAllThreadsLasts it involves one thread
// and reads no /proc, so it also holds under qemu-user.
func TestMaskHandlerChangesTheThreadsMask(t *testing.T) {
	type req struct{ reply chan uint64 }
	reqs := make(chan req)
	tidc := make(chan int)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tidc <- unix.Gettid()
		for r := range reqs {
			var cur uint64
			unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_BLOCK, 0, uintptr(unsafe.Pointer(&cur)), kernelSigsetSize, 0, 0)
			r.reply <- cur
		}
	}()
	defer close(reqs)
	tid := <-tidc
	mask := func() uint64 {
		r := req{make(chan uint64)}
		reqs <- r
		return <-r.reply
	}

	sa := sigaction{handler: rawMaskHandlerPC, flags: saSiginfo | saOnstack | saRestart | saRestorer, restorer: rawSigReturnPC, mask: ^uint64(0)}
	old := getAction(t, maskSignal)
	putAction(maskSignal, sa)
	defer putAction(maskSignal, old)
	if got := getAction(t, maskSignal); got.handler != rawMaskHandlerPC {
		t.Fatalf("signal %d: handler %#x, want the mask handler %#x", maskSignal, got.handler, rawMaskHandlerPC)
	}

	set := sigset(syscall.SIGUSR2, syscall.SIGTERM)
	bit := set.Val[0]
	start := mask()
	if start&bit != 0 {
		t.Fatalf("the thread starts with %x blocked: %x", bit, start)
	}
	run := func(block, unblock uint64) uint64 {
		t.Helper()
		atomic.StoreUint64(&rawMaskBlock, block)
		atomic.StoreUint64(&rawMaskUnblock, unblock)
		atomic.StoreUint32(&rawMaskAcks, 0)
		if err := unix.Tgkill(os.Getpid(), tid, maskSignal); err != nil {
			t.Fatal(err)
		}
		if !pollUntil(10*time.Second, func() bool { return atomic.LoadUint32(&rawMaskAcks) == 1 }) {
			t.Fatalf("the mask handler did not run on thread %d (acks %d)", tid, atomic.LoadUint32(&rawMaskAcks))
		}
		return mask()
	}
	if got := run(bit, 0); got != start|bit {
		t.Fatalf("after the block the thread's mask is %x, want %x", got, start|bit)
	}
	if got := run(0, bit); got != start {
		t.Fatalf("after the unblock the thread's mask is %x, want %x", got, start)
	}
}
