package osadapter

import (
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestThreadCount(t *testing.T) {
	if n := realOS().Threads(); n < 2 {
		t.Fatalf("Threads() = %d: a Go program runs several threads", n)
	}
}

// The re-exec's guard for a stop that arrives during it (exec.go): with a
// signal blocked in every thread, one sent to the process stays pending,
// rt_sigpending shows it, and unblocking delivers it. An earlier version
// passed the C library's sigset size to the kernel, which refused it
// (EINVAL) on every call: the pending check never saw a stop.
func TestBlockAllHoldsASignalPending(t *testing.T) {
	sys := realOS()
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGUSR2)
	defer signal.Stop(ch)
	set := sigset(syscall.SIGUSR2)
	if err := sys.BlockAll(&set); err != nil {
		if err == syscall.ENOTSUP {
			t.Skip("AllThreadsSyscall is unsupported in this build (cgo): the re-exec does without")
		}
		t.Fatalf("BlockAll: %v", err)
	}
	unblocked := false
	defer func() {
		if !unblocked {
			sys.UnblockAll(&set)
		}
	}()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var pending unix.Sigset_t
	if err := sys.Pending(&pending); err != nil {
		t.Fatalf("Pending: %v", err)
	}
	if !sigsetHas(pending, syscall.SIGUSR2) {
		t.Fatalf("SIGUSR2 sent while blocked in every thread is not pending: %x", pending.Val[0])
	}
	// (No wait for a delivery that must not come: a thread the runtime
	// starts from now on has its own mask, which is why exec.go blocks
	// again until the thread count holds still.)
	if err := sys.UnblockAll(&set); err != nil {
		t.Fatalf("UnblockAll: %v", err)
	}
	unblocked = true
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGUSR2 not delivered after UnblockAll")
	}
}
