package control

import (
	"net"
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

// Pause returns once a client accepted before it has been read and sent
// on, so that draining the channel afterwards finds its request.
func TestPauseWaitsForAcceptedClients(t *testing.T) {
	l, reqs, c := acceptedClient(t)
	// Accepted, but its line comes later.
	go func() {
		time.Sleep(100 * time.Millisecond)
		c.Write([]byte("reload\n"))
	}()
	if !l.Pause(10 * time.Second) {
		t.Fatal("Pause gave up on a client that sent its line")
	}
	select {
	case r := <-reqs:
		if r.Command.String() != "reload" {
			t.Fatalf("got %+v", r)
		}
		r.Conn.Close()
	default:
		t.Fatal("Pause returned before the accepted client's request was sent on")
	}
	l.Resume()
}

// A client that never sends its line does not hold Pause past its bound.
func TestPauseGivesUpOnASilentClient(t *testing.T) {
	l, _, _ := acceptedClient(t)
	start := time.Now()
	if l.Pause(200 * time.Millisecond) {
		t.Fatal("Pause says a silent client was done")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Pause took %v", d)
	}
	l.Resume()
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
