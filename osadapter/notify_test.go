package osadapter

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
	"github.com/mworker/mworker/internal/sdnotify"
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

// A service manager that does not read costs one warning, not one per
// notification; a send that goes through again says how many were lost,
// and a READY=1 lost carries MAINPID again on the next one.
func TestDeafServiceManagerWarnsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	for i := 0; sdnotify.Send(path, "STATUS=filler") == nil; i++ {
		if i == 100_000 {
			t.Fatal("the notify socket's queue never filled")
		}
	}

	var logs testLog
	sm := &serviceManager{addr: path, pid: 42, now: func() int64 { return 1e9 }, log: slog.New(slog.NewTextHandler(&logs, nil))}
	for _, st := range []fsm.NotifyState{fsm.NotifyReady, fsm.NotifyReloading, fsm.NotifyReady} {
		if err := sm.Notify(fsm.Notify{State: st}); err != nil {
			t.Fatalf("Notify %v to a full queue = %v, want nil (dropped)", st, err)
		}
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || sm.dropped != 3 || sm.announced {
		t.Fatalf("%d warnings, %d dropped, announced %v: want 1, 3, false; log:\n%s", n, sm.dropped, sm.announced, logs.String())
	}

	// The manager reads everything: the next READY=1 goes through, with
	// MAINPID since the first was lost.
	buf := make([]byte, sdnotify.MaxSize)
	for {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err != nil {
			break
		}
	}
	if err := sm.Notify(fsm.Notify{State: fsm.NotifyReady}); err != nil {
		t.Fatal(err)
	}
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := sdnotify.Parse(buf[:n]); err != nil || !m.Ready || m.MainPID != 42 {
		t.Fatalf("after the drops got %q (%v), want READY=1 with MAINPID=42", buf[:n], err)
	}
	if !strings.Contains(logs.String(), "reads its notify socket again") || !strings.Contains(logs.String(), "dropped=3") || sm.dropped != 0 {
		t.Fatalf("the recovery was not logged with the 3 dropped:\n%s", logs.String())
	}
}
