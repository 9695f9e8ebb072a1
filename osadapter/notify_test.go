package osadapter

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/sdnotify"

	"github.com/mworker/mworker/internal/e2etest"
)

// The test plays systemd: it receives the master's notify datagrams on a
// socket of its own, at a path and at an abstract address, around one
// reload and one stop.
func TestRealServiceManagerNotify(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	for _, kind := range []string{"path", "abstract"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			addr := filepath.Join(t.TempDir(), "notify.sock")
			if kind == "abstract" {
				addr = "@mworker-test-notify/" + strconv.Itoa(syscall.Getpid()) + "/" + t.Name()
			}
			conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			got := make(chan sdnotify.Message, 16)
			go func() {
				buf := make([]byte, sdnotify.MaxSize)
				for {
					n, err := conn.Read(buf)
					if err != nil {
						return
					}
					m, err := sdnotify.Parse(buf[:n])
					if err != nil {
						t.Errorf("malformed datagram %q: %v", buf[:n], err)
						continue
					}
					got <- m
				}
			}()
			next := func(what string) sdnotify.Message {
				t.Helper()
				select {
				case m := <-got:
					return m
				case <-time.After(20 * time.Second):
					t.Fatalf("no %s datagram within 20s", what)
				}
				return sdnotify.Message{}
			}

			m := startMaster(t, bin, testMaster{Workers: 2, StopSignal: int(syscall.SIGUSR1), Command: []string{bin, "worker", "DIR"},
				Env: []string{"NOTIFY_SOCKET=" + addr}})
			pid := m.cmd.Process.Pid

			if r := next("READY"); !r.Ready || r.MainPID != pid {
				t.Fatalf("first datagram %q, want READY=1 and MAINPID=%d", r.Format(), pid)
			}
			e2etest.WaitFor(t, 10*time.Second, "2 workers", func() bool { return len(workerPids(m.dir)) == 2 })

			before, _ := sdnotify.MonotonicUsec()
			m.signal(syscall.SIGUSR2)
			r := next("RELOADING")
			after, _ := sdnotify.MonotonicUsec()
			if !r.Reloading || r.MonotonicUsec < before || r.MonotonicUsec > after {
				t.Errorf("on reload got %q, want RELOADING=1 with MONOTONIC_USEC in [%d, %d]", r.Format(), before, after)
			}
			r = next("READY after the reload")
			status, _ := r.Status()
			if !r.Ready || r.MainPID != 0 || !strings.Contains(status, "generation 2") {
				t.Errorf("after the reload got %q, want READY=1 without MAINPID and a STATUS naming generation 2", r.Format())
			}

			m.signal(syscall.SIGTERM)
			if r := next("STOPPING"); !r.Stopping {
				t.Errorf("on stop got %q, want STOPPING=1", r.Format())
			}
			m.wait(20 * time.Second)
			if os.Getenv("OSADAPTER_SHOW_LOG") != "" {
				t.Log(m.log())
			}
			select {
			case r := <-got:
				t.Errorf("unexpected datagram after STOPPING=1: %q", r.Format())
			default:
			}
			for _, w := range workerPids(m.dir) {
				if a := notifyAddr(m.dir, w); a != "" {
					t.Errorf("worker %d saw NOTIFY_SOCKET=%s: the master's own socket leaked", w, a)
				}
			}
		})
	}
}
