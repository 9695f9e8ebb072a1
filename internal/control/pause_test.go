package control

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Clients that connect while the listener is paused wait in the queue and
// are served after Resume (or by the next image).
func TestPauseHoldsNewClientsInTheQueue(t *testing.T) {
	path := sockPath(t)
	l, reqs := serve(t, path)
	if !l.Pause(5 * time.Second) {
		t.Fatal("Pause with no client in flight did not finish")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("connect while paused: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("status\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reqs:
		t.Fatalf("a request was taken while paused: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	l.Resume()
	select {
	case r := <-reqs:
		if r.Command.String() != "status" {
			t.Fatalf("got %+v", r)
		}
		r.Conn.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the queued client was not served after Resume")
	}
	// Pause and Resume again: still serving.
	l.Pause(time.Second)
	l.Resume()
	if a := rawAskAsync(t, path, reqs); a != "reload" {
		t.Fatalf("after a second pause: %q", a)
	}
}

// Pause does not wait for an accepted client that has not sent its line:
// it keeps it unread (for the next image, or for after Resume), and the
// request is read once the client sends it.
func TestPauseKeepsAClientThatHasNotSentItsLine(t *testing.T) {
	l, reqs, c := acceptedClient(t)
	if !l.Pause(10 * time.Second) {
		t.Fatal("Pause did not finish")
	}
	l.pmu.Lock()
	kept := len(l.unread)
	l.pmu.Unlock()
	if kept != 1 {
		t.Fatalf("Pause kept %d clients unread, want 1", kept)
	}
	c.Write([]byte("reload\n"))
	l.Resume()
	select {
	case r := <-reqs:
		if r.Command.String() != "reload" {
			t.Fatalf("got %+v", r)
		}
		r.Conn.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the kept client was not read after Resume")
	}
}

// A request read while the event loop does not read the channel (it is
// busy with a re-exec) is held for Held once Pause begins, and never
// slips into the channel after the loop has drained it.
func TestPauseHoldsARequestTheLoopDoesNotRead(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan Request) // nobody reads it
	go l.Serve(out)
	t.Cleanup(func() { l.Close() })
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The request goes out once its reader is at work: before that, an
	// accepted client not yet reading also shows no reader, and a Pause
	// then keeps it unread instead of holding its request.
	waitFor(t, 5*time.Second, func() bool {
		l.pmu.Lock()
		defer l.pmu.Unlock()
		return l.inflight == 1 && len(l.reading) == 1 // reading
	})
	c.Write([]byte("reload\n"))
	waitFor(t, 5*time.Second, func() bool {
		l.pmu.Lock()
		defer l.pmu.Unlock()
		return l.inflight == 1 && len(l.reading) == 0 // read, waiting to send
	})
	if !l.Pause(10 * time.Second) {
		t.Fatal("Pause waited for a request the loop does not read")
	}
	held := l.Held()
	if len(held) != 1 || held[0].Command.String() != "reload" {
		t.Fatalf("held %+v, want the reload", held)
	}
	held[0].Conn.Close()
	select {
	case r := <-out:
		t.Fatalf("a held request was also sent: %+v", r)
	default:
	}
	l.Resume()
}

// The listen queue holds a storm of clients while nothing accepts (a
// re-exec): none gets EAGAIN, which a full unix socket queue returns at
// once.
func TestListenQueueHoldsAStorm(t *testing.T) {
	if listenBacklog() < 200 {
		t.Skipf("net.core.somaxconn is %d: too small for this test", listenBacklog())
	}
	path := sockPath(t)
	l, _ := serve(t, path)
	l.Pause(5 * time.Second)
	defer l.Resume()
	stormConnect(t, path, 200)
}

// An inherited control socket that an older mworker bound with a short
// queue gets the long one.
func TestInheritedListenerGetsTheLongQueue(t *testing.T) {
	if listenBacklog() < 200 {
		t.Skipf("net.core.somaxconn is %d: too small for this test", listenBacklog())
	}
	path := sockPath(t)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	l, err := importListener(path, strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	stormConnect(t, path, 200)
}

// stormConnect connects n clients to path, which nothing accepts.
func stormConnect(t *testing.T, path string, n int) {
	t.Helper()
	for i := range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("client %d of %d: %v", i+1, n, err)
		}
		defer c.Close()
	}
}

// rawAskAsync sends reload on a new connection and returns the command
// Serve sent on.
func rawAskAsync(t *testing.T, path string, reqs chan Request) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("reload\n"))
	select {
	case r := <-reqs:
		r.Conn.Close()
		return r.Command.String()
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
	return ""
}

// acceptedClient serves a fresh listener and connects one client that has
// been accepted and sent nothing yet.
func acceptedClient(t *testing.T) (*Listener, chan Request, net.Conn) {
	t.Helper()
	path := sockPath(t)
	l, reqs := serve(t, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitFor(t, 5*time.Second, func() bool {
		l.pmu.Lock()
		defer l.pmu.Unlock()
		return l.inflight == 1
	})
	return l, reqs, c
}
