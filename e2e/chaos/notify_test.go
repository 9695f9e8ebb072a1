package chaos

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// A service manager that does not read its NOTIFY_SOCKET must not stall
// reloads: each RELOADING=1 and READY=1 once waited for the send timeout
// (5 s) on a full queue, and 8 reloads took 31 s (issue 12, item 3).
// systemd's own sd_notify never blocks; the master's sends must not either.
func TestDeafNotifySocketDoesNotStallReloads(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify.sock")
	notifyDeafSocket(t, sock)

	m := notifyStartMaster(t, dir, []string{"NOTIFY_SOCKET=" + sock},
		"--ready", "immediate", "-n", "1", "--", "/bin/sleep", "1000")
	// The same master without a service manager, reloaded in turn with m:
	// what a reload costs on this machine at that moment.
	base := notifyStartMaster(t, t.TempDir(), nil,
		"--ready", "immediate", "-n", "1", "--", "/bin/sleep", "1000")
	m.waitServing(1, 20*time.Second)
	base.waitServing(1, 20*time.Second)
	reload := func(m *master, i int, what string) time.Duration {
		start := time.Now()
		// A blocked send took 5 s, two per reload.
		a, err := ask(m.ctl, "reload", 3*time.Second)
		if err != nil || !a.OK {
			t.Fatalf("reload %d of 8 %s: %+v, %v; log:\n%s", i+1, what, a, err, lastLines(m.logText(), 20))
		}
		return time.Since(start)
	}
	var deaf, healthy time.Duration
	for i := range 8 {
		deaf += reload(m, i, "with a deaf NOTIFY_SOCKET")
		healthy += reload(base, i, "without NOTIFY_SOCKET")
	}
	t.Logf("8 reloads took %v with a deaf NOTIFY_SOCKET, %v without one",
		deaf.Round(time.Millisecond), healthy.Round(time.Millisecond))

	// The acceptance is 8 reloads in at most 1 s (they take 0.3 s
	// on an idle machine); on a machine so loaded that 8 ordinary reloads
	// take more than half of that, the bound is twice theirs.
	if bound := max(time.Second, 2*healthy); deaf > bound {
		t.Fatalf("8 reloads with a deaf NOTIFY_SOCKET took %v, over %v (8 without one took %v)",
			deaf.Round(time.Millisecond), bound, healthy.Round(time.Millisecond))
	}

	// One warning for the whole run, not one per send or per image.
	var warnings []string
	for _, line := range strings.Split(m.logText(), "\n") {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "notif") {
			warnings = append(warnings, line)
		}
	}
	if len(warnings) != 1 {
		t.Fatalf("%d warnings about the service manager's notify socket, want 1:\n%s", len(warnings), strings.Join(warnings, "\n"))
	}
}

// notifyDeafSocket binds a datagram socket at path that is never read, and
// fills its receive queue: a send to it now finds the queue full.
func notifyDeafSocket(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// One sender runs out of its own send buffer before the receiver's
	// queue (net.unix.max_dgram_qlen) is full: use senders until a fresh
	// one cannot send a single datagram. They stay open with the socket,
	// so that their datagrams stay queued.
	to := &unix.SockaddrUnix{Name: path}
	for senders := 0; ; senders++ {
		if senders == 1000 {
			t.Fatalf("the notify socket's queue was not full after 1000 senders")
		}
		s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(s) })
		sent := 0
		for {
			err := unix.Sendto(s, []byte("STATUS=filler"), unix.MSG_DONTWAIT, to)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				t.Fatalf("fill the notify socket: %v", err)
			}
			sent++
		}
		if sent == 0 {
			return
		}
	}
}

// notifyStartMaster is startMaster with extra environment variables (and
// without the test's own NOTIFY_SOCKET): the master's log in
// dir/master.log, killed (then waited for) when the test ends.
func notifyStartMaster(t *testing.T, dir string, env []string, args ...string) *master {
	t.Helper()
	m := &master{t: t, dir: dir, ctl: filepath.Join(dir, "ctl.sock"), log: filepath.Join(dir, "master.log")}
	var cmdEnv []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmdEnv = append(cmdEnv, kv)
		}
	}
	p, err := e2etest.StartLoggedEnv(m.log, append(cmdEnv, env...), mworkerPath, append([]string{"run", "--control", m.ctl}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.p = p
	t.Cleanup(m.kill)
	return m
}
