package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// A server that drains on SIGTERM and then re-raises it (puma does) dies
// of the very signal it was sent: by default the master reports that
// truthfully, 143, and --success-exit 143 turns it into 0; a status not
// listed is untouched.
func TestSuccessExit(t *testing.T) {
	t.Parallel()
	const reraise = `trap 'trap - TERM; kill -TERM $$' TERM
` + idle
	for _, tt := range []struct {
		name   string
		script string
		opts   []string
		want   int
	}{
		{"default", reraise, nil, 143},
		{"143 listed", reraise, []string{"--success-exit", "143"}, 0},
		{"two listed", reraise, []string{"--success-exit", "3", "--success-exit=143"}, 0},
		{"not listed", `trap 'exit 3' TERM
` + idle, []string{"--success-exit", "143"}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := startRun(t, "", tt.script, append([]string{"-n", "2", "--ready", "immediate", "--stop-timeout", "5s"}, tt.opts...)...)
			m.waitWorkers(2)
			m.signal(syscall.SIGTERM)
			if got := m.wait(exitTimeout); got != tt.want {
				t.Errorf("master exited %d, want %d; log:\n%s", got, tt.want, m.logText())
			}
		})
	}
}

// --shutdown-delay: after SIGTERM the master serves on for the delay:
// fresh connections are answered (the listeners stay open, the workers
// are not told), /readyz says 503; then the workers get SIGTERM, drain,
// and the master exits with their status (0).
func TestShutdownDelay(t *testing.T) {
	t.Parallel()
	worker, err := e2etest.Build(t.TempDir(), "httpworker", "./examples/httpworker")
	if err != nil {
		t.Fatal(err)
	}
	const delay = 2 * time.Second
	m := startRun(t, "", "", "-n", "2", "--ready", "notify", "--shutdown-delay", delay.String(),
		"--listen", "unix://{dir}/web.sock", "--metrics", "unix://{dir}/metrics.sock", "--", worker)
	web := metricsClient(filepath.Join(m.dir, "web.sock"))
	health := metricsClient(filepath.Join(m.dir, "metrics.sock"))
	e2etest.WaitFor(t, 10*time.Second, "/readyz 200", func() bool {
		code, _, err := get(health, "/readyz")
		return err == nil && code == 200
	})

	start := time.Now()
	m.signal(syscall.SIGTERM)
	var (
		mu       sync.Mutex
		lastOK   time.Duration // after SIGTERM, of the last answered request
		failures []string      // requests that failed before the delay was over
		answered int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !m.exited() {
			at := time.Since(start)
			code, body, err := get(web, "/")
			mu.Lock()
			switch {
			case err == nil && code == 200 && strings.HasPrefix(body, "pid="):
				answered++
				lastOK = at
			case at < delay-200*time.Millisecond:
				failures = append(failures, at.String()+": "+strconv.Itoa(code)+" "+errText(err))
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	e2etest.WaitFor(t, 5*time.Second, "/readyz 503 during the delay", func() bool {
		code, body, err := get(health, "/readyz")
		return err == nil && code == 503 && strings.Contains(body, "shutdown delay")
	})
	if m.exited() || time.Since(start) >= delay {
		t.Fatalf("the delay was over before /readyz said 503 (master exited: %v)", m.exited())
	}
	got := m.wait(exitTimeout + delay)
	elapsed := time.Since(start)
	<-done
	if got != 0 {
		t.Errorf("master exited %d, want 0 (the drained workers' status)", got)
	}
	if elapsed < delay {
		t.Errorf("master exited %v after SIGTERM, before the %v delay was over", elapsed, delay)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) > 0 {
		t.Errorf("%d fresh connections failed during the delay: %v", len(failures), failures)
	}
	if lastOK < delay-300*time.Millisecond {
		t.Errorf("the last request answered was sent %v after SIGTERM, want one near the end of the %v delay", lastOK, delay)
	}
	t.Logf("%d requests answered after SIGTERM, the last sent %v after it; master exited after %v", answered, lastOK, elapsed)
	log := m.logText()
	for _, w := range []string{"stopping after the shutdown delay", "shutdown delay over"} {
		if !strings.Contains(log, w) {
			t.Errorf("no %q in the log:\n%s", w, log)
		}
	}
}

// A second SIGTERM during the delay cuts it short: the workers are told
// at once.
func TestShutdownDelayCutShort(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `trap 'exit 0' TERM
`+idle, "-n", "2", "--ready", "immediate", "--shutdown-delay", "1m")
	m.waitWorkers(2)
	m.signal(syscall.SIGTERM)
	m.waitLog(0, "stopping after the shutdown delay")
	if m.exited() {
		t.Fatalf("master exited at the first SIGTERM despite the delay:\n%s", m.logText())
	}
	m.signal(syscall.SIGTERM)
	if got := m.wait(exitTimeout); got != 0 {
		t.Errorf("master exited %d, want 0", got)
	}
	if !strings.Contains(m.logText(), "shutdown delay cut short") {
		t.Errorf("no \"shutdown delay cut short\" in the log:\n%s", m.logText())
	}
}

// --user nobody, as root: the master stays root, every worker runs as
// uid 65534 with its primary group and no supplementary groups, and
// READY=1 from a worker of that uid on its notify socket (a path in the
// master's private directory) is accepted.
func TestUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("--user needs root: run the tests as root to cover it (the refusal is TestResolveCredential's)")
	}
	// Not from PATH: root's may name a python3 under /root, which nobody
	// cannot reach.
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("no /usr/bin/python3 to send READY=1 with (scripts/test-deps.sh installs it)")
	}
	dir := t.TempDir()
	ready := `import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
time.sleep(600)
`
	log := filepath.Join(dir, "master.log")
	p, err := e2etest.StartLogged(log, mworkerBinary(t), "run", "-n", "2", "--ready", "notify", "--ready-timeout", "20s",
		"--user", "nobody", "--success-exit", "143", "--", python, "-c", ready)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(p.Pid, syscall.SIGKILL)
		<-p.Done
	})
	logText := func() string { b, _ := os.ReadFile(log); return string(b) }
	e2etest.WaitFor(t, 20*time.Second, "all workers ready (their READY=1 accepted); log:\n"+logText(), func() bool {
		return strings.Contains(logText(), "all workers ready")
	})
	kids := children(p.Pid)
	if len(kids) != 2 {
		t.Fatalf("master has children %v, want 2 workers", kids)
	}
	if uid, gid, groups := procIDs(t, p.Pid); uid != "0" || gid != "0" {
		t.Errorf("master runs as uid %s gid %s (groups %q), want root", uid, gid, groups)
	}
	for _, w := range kids {
		uid, gid, groups := procIDs(t, w.pid)
		if uid != "65534" || groups != "" {
			t.Errorf("worker %d: uid %s gid %s groups %q, want uid 65534 and no supplementary groups", w, uid, gid, groups)
		}
	}
	syscall.Kill(p.Pid, syscall.SIGTERM)
	select {
	case <-p.Done:
	case <-time.After(exitTimeout):
		t.Fatal("master did not exit after SIGTERM")
	}
	if p.Status != 0 {
		t.Errorf("master exited %d, want 0 (143 is listed); log:\n%s", p.Status, logText())
	}
}

// procIDs reads the real uid, gid and supplementary groups of pid.
func procIDs(t *testing.T, pid int) (uid, gid, groups string) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		f := strings.Fields(v)
		switch {
		case k == "Uid" && len(f) > 0:
			uid = f[0]
		case k == "Gid" && len(f) > 0:
			gid = f[0]
		case k == "Groups":
			groups = strings.Join(f, " ")
		}
	}
	return uid, gid, groups
}

// A command the workers' user cannot reach (resolved with root's rights, run
// with nobody's): the spawn fails with EACCES, and the log says why, naming
// --user, instead of a bare "permission denied".
func TestUserCommandNotReachable(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("--user needs root: run the tests as root to cover it")
	}
	dir := t.TempDir() // 0700, root's: nobody cannot enter it
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "server.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "master.log")
	p, err := e2etest.StartLogged(log, mworkerBinary(t), "run", "-n", "1", "--restart", "no", "--user", "nobody", "--", script)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(p.Pid, syscall.SIGKILL)
		<-p.Done
	})
	select {
	case <-p.Done:
	case <-time.After(20 * time.Second):
		t.Fatal("the master did not exit after its only worker could not start (--restart no)")
	}
	b, _ := os.ReadFile(log)
	// The exec fails in ForkExec ("permission denied"), or, when the
	// worker starts through a trampoline (mworker started with a signal
	// ignored: nohup), in the child (exit 126): the hint comes either way.
	if !strings.Contains(strings.ToLower(string(b)), "permission denied") || !strings.Contains(string(b), "(--user)") {
		t.Errorf("the log does not say the command is out of the --user's reach:\n%s", b)
	}
}
