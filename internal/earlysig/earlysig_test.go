//go:build linux && (amd64 || arm64)

package earlysig

import (
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCaughtAtInit(t *testing.T) {
	if HandlerPC == 0 || ReadFd < 0 {
		t.Fatalf("no early catch: HandlerPC %#x, ReadFd %d", HandlerPC, ReadFd)
	}
	for n := 1; n <= 64; n++ {
		want := n != 9 && n != 19 && n != 23 && n != 33
		if IsCaught(n) != want {
			t.Errorf("signal %d: caught %v, want %v", n, IsCaught(n), want)
		}
	}
	if InitAt <= 0 || DoneAt < InitAt || Monotonic() < DoneAt {
		t.Errorf("clock: InitAt %d, DoneAt %d, now %d", InitAt, DoneAt, Monotonic())
	}
}

// A signal sent with kill(2) is written to the pipe, and Restore gives the
// signal back the runtime's handler.
func TestKillWritesPipeThenRestore(t *testing.T) {
	const sig = syscall.SIGUSR1
	if cur, ok := Current(int(sig)); !ok || cur.Handler != HandlerPC {
		t.Fatalf("SIGUSR1's handler is %#x, want the early one %#x", cur.Handler, HandlerPC)
	}
	if Old[sig].Handler <= 1 {
		t.Fatalf("SIGUSR1 had %#x before: not the runtime's handler", Old[sig].Handler)
	}
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
	if !readSignal(sig, 5*time.Second) {
		t.Fatal("SIGUSR1 was not written to the pipe")
	}
	if !Restore(int(sig)) {
		t.Fatal("Restore(SIGUSR1) did nothing")
	}
	if cur, _ := Current(int(sig)); cur.Handler != Old[sig].Handler || IsCaught(int(sig)) {
		t.Fatalf("after Restore SIGUSR1's handler is %#x, want %#x (caught %v)", cur.Handler, Old[sig].Handler, IsCaught(int(sig)))
	}
}

// deref reads *p and returns what a panic of the read recovered.
//
//go:noinline
func deref(p *int) (v int, r any) {
	defer func() { r = recover() }()
	return *p, nil
}

// A fault the kernel raises while the early handler holds SIGSEGV goes on
// to the runtime's handler (Fwd), which makes it a panic; a SIGSEGV sent
// with kill(2) is written to the pipe like any other signal.
func TestKernelFaultGoesToTheRuntime(t *testing.T) {
	const sig = syscall.SIGSEGV
	if cur, ok := Current(int(sig)); !ok || cur.Handler != HandlerPC {
		t.Fatalf("SIGSEGV's handler is %#x, want the early one %#x", cur.Handler, HandlerPC)
	}
	if Fwd[sig] == 0 {
		t.Fatal("no handler to forward a real SIGSEGV to")
	}
	done := make(chan any, 1)
	go func() {
		_, r := deref(nil)
		done <- r
	}()
	select {
	case r := <-done:
		if err, ok := r.(runtime.Error); !ok || !strings.Contains(err.Error(), "nil pointer") {
			t.Fatalf("a nil dereference recovered %v, want the runtime's nil pointer panic", r)
		}
	case <-time.After(10 * time.Second):
		// The early handler returned to the faulting load, again and
		// again.
		t.Fatal("a nil dereference did not become a panic within 10 s: the fault was not forwarded")
	}
	if err := syscall.Kill(os.Getpid(), sig); err != nil {
		t.Fatal(err)
	}
	if !readSignal(sig, 5*time.Second) {
		t.Fatal("a SIGSEGV sent with kill(2) was not written to the pipe")
	}
}

// readSignal reads the early catch's pipe until sig comes, or the time
// is up.
func readSignal(sig syscall.Signal, within time.Duration) bool {
	var b [64]byte
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		n, err := syscall.Read(int(ReadFd), b[:])
		for _, c := range b[:max(n, 0)] {
			if c == byte(sig) {
				return true
			}
		}
		if err == syscall.EAGAIN {
			time.Sleep(time.Millisecond)
		}
	}
	return false
}
