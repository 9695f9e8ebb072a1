package container

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// unixClient speaks HTTP to a unix socket, one fresh connection per
// request so that every worker gets its share of them.
func unixClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

// answer is one response of examples/httpworker.
type answer struct{ pid, generation, slot, listener string }

func ask(c *http.Client) (answer, error) {
	resp, err := c.Get("http://worker/")
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	var a answer
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "pid=%s generation=%s slot=%s listener=%s", &a.pid, &a.generation, &a.slot, &a.listener); err != nil {
		return answer{}, fmt.Errorf("unexpected answer %q: %w", b, err)
	}
	return a, nil
}

// seeGeneration asks until it has heard n distinct workers of generation
// gen, and fails the test on any request error: the socket is never
// closed, so no request may fail, during a reload or not.
func seeGeneration(t *testing.T, c *http.Client, n int, gen string) map[string]bool {
	t.Helper()
	seen := make(map[string]bool)
	e2etest.WaitFor(t, 20*time.Second, fmt.Sprintf("answers from %d workers of generation %s", n, gen), func() bool {
		a, err := ask(c)
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
		if a.generation == gen {
			seen[a.pid] = true
		}
		return len(seen) == n
	})
	return seen
}

// TestGoSystemdWorker runs examples/httpworker, a server written with
// go-systemd's activation and daemon packages, under mworker with
// --ready notify: both workers take the socket mworker bound and say
// READY=1 to their own NOTIFY_SOCKET; a SIGUSR2 reload and an "mworker
// reload" each bring a new generation; SIGTERM drains them and the master
// exits 0, their status.
func TestGoSystemdWorker(t *testing.T) {
	dir := t.TempDir()
	sock, ctl := filepath.Join(dir, "s.sock"), filepath.Join(dir, "control.sock")
	m := startProcess(t, nil, mworkerPath, "run", "-n", "2", "--listen", "web=unix://"+sock, "--ready", "notify",
		"--ready-timeout", "20s", "--control", ctl, "--", httpworkerPath)
	c := unixClient(sock)
	e2etest.WaitFor(t, 10*time.Second, "the master to bind "+sock, func() bool {
		_, err := ask(c)
		return err == nil
	})

	first := seeGeneration(t, c, 2, "1")
	if a, err := ask(c); err != nil || a.listener != "web" {
		t.Fatalf("answer %+v (%v): want listener=web, the name given with --listen web=ADDR, read from LISTEN_FDNAMES", a, err)
	}

	if err := syscall.Kill(m.cmd.Process.Pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	second := seeGeneration(t, c, 2, "2")
	for pid := range second {
		if first[pid] {
			t.Fatalf("worker %s answers for both generations", pid)
		}
	}
	waitGone(t, first)

	// What ExecReload= of docs/systemd.md runs: it waits for the outcome
	// and reports it in its exit status.
	out, err := exec.Command(mworkerPath, "reload", "--control", ctl).CombinedOutput()
	if err != nil {
		t.Fatalf("mworker reload: %v\n%s", err, out)
	}
	seeGeneration(t, c, 2, "3")
	waitGone(t, second)
	// With the old workers gone, generation 3 alone answers.
	for range 20 {
		a, err := ask(c)
		if err != nil {
			t.Fatalf("request after the reload: %v", err)
		}
		if a.generation != "3" {
			t.Fatalf("generation %s answered (pid %s) after its workers were reaped, want 3", a.generation, a.pid)
		}
	}

	if err := syscall.Kill(m.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := m.exitStatus(t, 20*time.Second); got != 0 {
		t.Fatalf("master exited %d after SIGTERM, want 0 (the drained workers' status); output:\n%s", got, m.stderr)
	}
}

// waitGone waits until every worker pid in set has exited and been
// reaped.
func waitGone(t *testing.T, set map[string]bool) {
	t.Helper()
	for pid := range set {
		n, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("bad pid %q", pid)
		}
		e2etest.WaitFor(t, 20*time.Second, "old worker "+pid+" to stop", func() bool {
			_, exists := readStat("/proc", n)
			return !exists
		})
	}
}
