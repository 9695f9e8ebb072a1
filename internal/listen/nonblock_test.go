package listen

import (
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// Taking over a listening socket must never change its O_NONBLOCK flag,
// not even for a moment: the flag belongs to the open file description,
// which the master and every worker share. A Go worker accepts through
// the runtime's poller on a non-blocking socket; if another process (a
// new worker adopting it at start, the master after a re-exec) makes it
// blocking while that worker calls accept4 on an empty queue, the call
// blocks in the kernel, and the worker's Close of its listener then waits
// for it: a draining demo worker hung until --stop-timeout killed it (1 in
// about 100 reload-then-stop tries, its stack in accept4 and Close).
// A watcher reads the flag in a loop while the socket is adopted again
// and again, as workers and a re-exec'd master do.
func TestAdoptKeepsTheSharedFlag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f, err := ln.(*net.UnixListener).File() // a dup: the same description
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd()) // Fd makes the shared description blocking: undo it
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}

	var blockingSeen atomic.Int64
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil && fl&unix.O_NONBLOCK == 0 {
				blockingSeen.Add(1)
			}
		}
	}()
	for range 3000 {
		d, err := unix.Dup(fd)
		if err != nil {
			t.Fatal(err)
		}
		l, err := adopt(d, "s")
		if err != nil {
			t.Fatal(err)
		}
		l.File.Close()
	}
	close(stop)
	<-watched
	if n := blockingSeen.Load(); n > 0 {
		t.Fatalf("the shared socket was seen blocking %d times while it was adopted", n)
	}
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("adopt left the shared socket blocking")
	}
}
