package e2e

import (
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// A stop drains in-flight requests, but a connection that arrives once
// the workers have stopped accepting is refused at once, so that a client
// or a load balancer retries elsewhere. Before, the master kept its own
// copy of each --listen socket until it exited: the kernel queued such a
// connection in a backlog nobody accepted from, and reset it when the
// master exited (curl exit 56 after seconds, issue 16).
func TestStopRefusesNewConnections(t *testing.T) {
	t.Parallel()
	m := startMaster(t, t.TempDir(), demoOptions, mworkerPath, "demo-worker")
	m.waitSettled(2, 15*time.Second)

	// One slow request in flight keeps a worker draining for 2 s: the
	// demo worker sends the header at once and the body after the sleep.
	slow := make(chan error, 1)
	headers := make(chan struct{})
	go func() {
		resp, err := unixClient(m.httpSock).Get("http://mworker/?sleep=2s")
		close(headers)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != http.StatusOK {
				err = errors.New(resp.Status)
			}
		}
		slow <- err
	}()
	select {
	case <-headers:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request got no header in 10 s")
	}

	stopped := time.Now()
	m.cmd.Process.Signal(syscall.SIGTERM)
	var refusedAt time.Time
	e2etest.WaitFor(t, 3*time.Second, "a new connection to be refused while the workers drain", func() bool {
		c, err := net.Dial("unix", m.httpSock)
		if err == nil {
			c.Close()
			return false
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			refusedAt = time.Now()
			return true
		}
		t.Fatalf("dial while draining: %v (want ECONNREFUSED)", err)
		return false
	})
	t.Logf("new connections refused %v after SIGTERM", refusedAt.Sub(stopped).Round(time.Millisecond))
	select {
	case err := <-slow:
		t.Fatalf("new connections were refused only %v after SIGTERM, once the drain was over (the request in flight ended: %v): until then they were queued",
			refusedAt.Sub(stopped).Round(time.Millisecond), err)
	default:
	}
	// From then on, every new connection is refused: none is accepted
	// into a queue and reset later.
	for i := 0; i < 50 && !m.exited(); i++ {
		c, err := net.Dial("unix", m.httpSock)
		if err == nil {
			c.Close()
			t.Fatalf("connection %d after the first refusal was accepted into a backlog", i)
		}
		time.Sleep(2 * time.Millisecond) // spacing of the probes, not a wait for a condition
	}
	select {
	case err := <-slow:
		if err != nil {
			t.Errorf("the request in flight at the stop failed: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight at the stop was not answered in 10 s")
	}
	select {
	case <-m.done:
	case <-time.After(10 * time.Second):
		t.Fatal("master still running 10 s after its workers drained")
	}
}
