package osadapter

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// These tests run real masters: the test binary re-executed in its
// "master" part (main_test.go), with /bin/sh or the test binary's "worker"
// part as workers.

type realMaster struct {
	t    *testing.T
	cmd  *exec.Cmd
	dir  string
	logs string
	done chan struct{}
	err  error
}

// startMaster runs bin (the test binary or a copy) as a master.
func startMaster(t *testing.T, bin string, c testMaster) *realMaster {
	t.Helper()
	return startMasterArgv(t, []string{bin, "master"}, c)
}

// startMasterArgv runs argv, which must end up executing a test master.
func startMasterArgv(t *testing.T, argv []string, c testMaster) *realMaster {
	t.Helper()
	dir := t.TempDir()
	if c.StopTimeout == 0 {
		c.StopTimeout = 5 * time.Second
	}
	if c.StopSignal == 0 {
		c.StopSignal = int(syscall.SIGTERM)
	}
	if c.Restart == "" {
		c.Restart = "always"
	}
	for i, a := range c.Command {
		c.Command[i] = strings.ReplaceAll(a, "DIR", dir)
	}
	c.PidFile = strings.ReplaceAll(c.PidFile, "DIR", dir)
	c.Control = strings.ReplaceAll(c.Control, "DIR", dir)
	spec, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	m := &realMaster{t: t, dir: dir, logs: filepath.Join(dir, "master.log"), done: make(chan struct{})}
	logf, err := os.Create(m.logs)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	m.cmd = exec.Command(argv[0], argv[1:]...)
	m.cmd.Env = append(append(os.Environ(), c.Env...), envTestMaster+"="+string(spec))
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.ExtraFiles = c.ExtraFiles
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			m.cmd.Process.Kill()
			<-m.done
		}
		if t.Failed() {
			t.Logf("master log:\n%s", m.log())
		}
	})
	return m
}

func (m *realMaster) log() string {
	b, _ := os.ReadFile(m.logs)
	return string(b)
}

func (m *realMaster) count(substr string) int { return strings.Count(m.log(), substr) }

func (m *realMaster) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("signal master: %v", err)
	}
}

// wait returns the master's exit status.
func (m *realMaster) wait(d time.Duration) int {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(d):
		m.t.Fatalf("master still running after %v", d)
	}
	var ee *exec.ExitError
	if errors.As(m.err, &ee) {
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if m.err != nil {
		m.t.Fatal(m.err)
	}
	return 0
}

// workers lists the pids of test workers that wrote a log in dir.
func workerPids(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(strings.TrimSuffix(e.Name(), ".log")); err == nil && strings.HasSuffix(e.Name(), ".log") {
			pids = append(pids, n)
		}
	}
	slices.Sort(pids)
	return pids
}

// workerLog is what test worker pid recorded: its first line, then signals.
func workerLog(dir string, pid int) string {
	b, _ := os.ReadFile(filepath.Join(dir, strconv.Itoa(pid)+".log"))
	return string(b)
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func testBinary(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func liveCount(pids []int) int {
	n := 0
	for _, p := range pids {
		if alive(p) {
			n++
		}
	}
	return n
}

func TestRealExitStatusOfTheWorker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		script string
		want   int
	}{{"exit 0", 0}, {"exit 3", 3}, {"kill -SEGV $$", 139}} {
		m := startMaster(t, testBinary(t), testMaster{Workers: 2, Restart: "no", Command: []string{"/bin/sh", "-c", tc.script}})
		if got := m.wait(20 * time.Second); got != tc.want {
			t.Errorf("%q: master exited %d, want %d", tc.script, got, tc.want)
		}
	}
}

func TestRealOrphansAreReapedAndTermIsForwarded(t *testing.T) {
	t.Parallel()
	// The first worker leaves an orphan behind and exits; it is restarted
	// and the orphan, reparented to the master (a subreaper), is reaped.
	script := `if [ ! -e DIR/once ]; then : > DIR/once; sleep 0.3 & echo $! > DIR/orphan; exit 0; fi; echo $$ > DIR/worker; exec sleep 1000`
	m := startMaster(t, testBinary(t), testMaster{Workers: 1, Command: []string{"/bin/sh", "-c", script}, PidFile: "DIR/pid"})
	var orphan int
	e2etest.WaitFor(t, 10*time.Second, "the orphan's pid", func() bool {
		b, _ := os.ReadFile(filepath.Join(m.dir, "orphan"))
		orphan, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return orphan > 0
	})
	e2etest.WaitFor(t, 10*time.Second, "the orphan reaped", func() bool {
		return regexp.MustCompile(`reaped unknown child" pid=` + strconv.Itoa(orphan) + `\b`).MatchString(m.log())
	})
	if alive(orphan) {
		t.Errorf("orphan %d still there", orphan)
	}
	pidFile := filepath.Join(m.dir, "pid")
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(m.cmd.Process.Pid) {
		t.Errorf("pid file %q %v, want %d", b, err, m.cmd.Process.Pid)
	}
	e2etest.WaitFor(t, 10*time.Second, "the restarted worker", func() bool {
		_, err := os.Stat(filepath.Join(m.dir, "worker"))
		return err == nil
	})
	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 128+int(syscall.SIGTERM) {
		t.Errorf("master exited %d after SIGTERM, want 143 (the worker's status)", got)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file left behind: %v", err)
	}
}

func TestRealWorkersSurviveRepeatedReexecs(t *testing.T) {
	t.Parallel()
	const reloads = 20
	bin := testBinary(t)
	m := startMaster(t, bin, testMaster{Workers: 2, StopSignal: int(syscall.SIGUSR1), Command: []string{bin, "worker", "DIR"}})
	e2etest.WaitFor(t, 20*time.Second, "2 workers", func() bool { return len(workerPids(m.dir)) == 2 })
	for i := 1; i <= reloads; i++ {
		m.signal(syscall.SIGUSR2)
		// Each new worker has its signal handler in place before the next
		// reload tells it to stop (a Go program drops SIGUSR1 before that).
		e2etest.WaitFor(t, 20*time.Second, "reload "+strconv.Itoa(i), func() bool {
			return m.count("reload complete") == i && len(workerPids(m.dir)) == 2*(i+1)
		})
	}
	pids := workerPids(m.dir)
	if len(pids) != 2*(reloads+1) {
		t.Fatalf("%d workers started over %d reloads, want %d", len(pids), reloads, 2*(reloads+1))
	}
	e2etest.WaitFor(t, 20*time.Second, "exactly 2 live workers", func() bool { return liveCount(pids) == 2 })
	cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(m.cmd.Process.Pid) + "/cmdline")
	if !strings.Contains(string(cmdline), "\x00-sf\x00") {
		t.Errorf("master cmdline %q lacks -sf", cmdline)
	}
	for _, pid := range pids {
		l := workerLog(m.dir, pid)
		if strings.Contains(l, "badenv") {
			t.Errorf("worker %d saw internal variables:\n%s", pid, l)
		}
		// SIGTERM would be the parent-death signal: a re-exec killed the
		// thread that forked this worker.
		if strings.Contains(l, "TERM") {
			t.Errorf("worker %d got SIGTERM across a re-exec:\n%s", pid, l)
		}
		// A worker forked after a re-exec must not inherit the SIGUSR1 and
		// SIGUSR2 that the exec blocked.
		if m := regexp.MustCompile(`sigblk=([0-9a-f]+)`).FindStringSubmatch(l); m == nil {
			t.Errorf("worker %d did not record its mask:\n%s", pid, l)
		} else if blk, _ := strconv.ParseUint(m[1], 16, 64); blk&(1<<(syscall.SIGUSR1-1)|1<<(syscall.SIGUSR2-1)) != 0 {
			t.Errorf("worker %d started with SIGUSR1/SIGUSR2 blocked (SigBlk %s)", pid, m[1])
		}
		if alive(pid) == strings.Contains(l, "USR1") {
			t.Errorf("worker %d: alive=%v, log:\n%s", pid, alive(pid), l)
		}
	}
	var windows, early, inits []string
	for _, mm := range regexp.MustCompile(`window_us=(\d+) early_us=(\d+) init_us=(\d+)`).FindAllStringSubmatch(m.log(), -1) {
		windows, early, inits = append(windows, mm[1]), append(early, mm[2]), append(inits, mm[3])
	}
	t.Logf("execve to signal.Notify, µs, %d re-execs: %s", len(windows), strings.Join(windows, " "))
	t.Logf("execve to the early catch (internal/earlysig), µs: %s", strings.Join(early, " "))
	t.Logf("execve to osadapter's init, µs: %s", strings.Join(inits, " "))
	if len(windows) != reloads {
		t.Errorf("%d exec windows logged, want %d", len(windows), reloads)
	}

	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 0 {
		t.Errorf("master exited %d, want 0 (workers exit 0 on SIGTERM)", got)
	}
	if n := liveCount(pids); n != 0 {
		t.Errorf("%d workers alive after the master exited", n)
	}
}

func TestRealExecFailureKeepsWorkers(t *testing.T) {
	t.Parallel()
	// The master runs from a copy of the test binary; the copy then loses
	// its execute bit, as when a broken package replaced the binary.
	dir := t.TempDir()
	bin := filepath.Join(dir, "mworker")
	if err := e2etest.CopyFile(testBinary(t), bin); err != nil {
		t.Fatal(err)
	}
	m := startMaster(t, bin, testMaster{Workers: 2, Command: []string{"/bin/sh", "-c", "echo $$ >> DIR/workers; exec sleep 1000"}})
	e2etest.WaitFor(t, 10*time.Second, "2 workers", func() bool { return m.count("worker started") == 2 })
	if err := os.Chmod(bin, 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		m.signal(syscall.SIGUSR2)
		e2etest.WaitFor(t, 10*time.Second, "reload failure "+strconv.Itoa(i), func() bool {
			return m.count("reload failed: the master could not re-execute") == i
		})
	}
	if !strings.Contains(m.log(), "permission denied") {
		t.Errorf("the failure does not say why")
	}
	if n := m.count("worker started"); n != 2 {
		t.Errorf("%d workers started, want the first 2 kept", n)
	}
	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 143 {
		t.Errorf("master exited %d after SIGTERM, want 143", got)
	}
}

func TestRealMasterKilledStopsWorkers(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	m := startMaster(t, bin, testMaster{Workers: 2, Command: []string{bin, "worker", "DIR"}})
	e2etest.WaitFor(t, 20*time.Second, "2 workers", func() bool { return len(workerPids(m.dir)) == 2 && m.count("all workers ready") == 1 })
	// One reload first: the workers then belong to an image that was
	// itself started by execve.
	m.signal(syscall.SIGUSR2)
	e2etest.WaitFor(t, 20*time.Second, "the reload", func() bool {
		return m.count("reload complete") == 1 && len(workerPids(m.dir)) == 4
	})
	pids := workerPids(m.dir)
	e2etest.WaitFor(t, 20*time.Second, "the old workers gone", func() bool { return liveCount(pids) == 2 })
	var current []int
	for _, p := range pids {
		if alive(p) {
			current = append(current, p)
		}
	}
	m.signal(syscall.SIGKILL)
	m.wait(10 * time.Second)
	e2etest.WaitFor(t, 10*time.Second, "workers gone after the master's SIGKILL", func() bool { return liveCount(pids) == 0 })
	for _, pid := range current {
		if l := workerLog(m.dir, pid); !strings.Contains(l, "TERM") {
			t.Errorf("worker %d did not get the parent-death signal:\n%s", pid, l)
		}
	}
}

func TestRealListenersReachWorkersAcrossReloads(t *testing.T) {
	t.Parallel()
	// Each worker notes "<pid> <LISTEN_PID> <LISTEN_FDS> <LISTEN_FDNAMES>
	// <fd 3's socket>" and its environment.
	script := `echo "$$ $LISTEN_PID $LISTEN_FDS $LISTEN_FDNAMES $(readlink /proc/$$/fd/3)" > DIR/listen.$$.tmp; env > DIR/env.$$; mv DIR/listen.$$.tmp DIR/listen.$$; exec sleep 1000`
	m := startMaster(t, testBinary(t), testMaster{Workers: 2, Listen: []string{"web=127.0.0.1:0"}, Command: []string{"/bin/sh", "-c", script}})
	var files []string
	e2etest.WaitFor(t, 10*time.Second, "2 workers", func() bool {
		files, _ = filepath.Glob(filepath.Join(m.dir, "listen.*[0-9]"))
		return len(files) == 2
	})
	m.signal(syscall.SIGUSR2)
	e2etest.WaitFor(t, 10*time.Second, "2 more workers after a reload", func() bool {
		files, _ = filepath.Glob(filepath.Join(m.dir, "listen.*[0-9]"))
		return len(files) == 4 && m.count("reload complete") == 1
	})
	sockets := map[string]bool{}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		fields := strings.Fields(string(b))
		if len(fields) != 5 || fields[0] != fields[1] || fields[2] != "1" || fields[3] != "web" || !strings.HasPrefix(fields[4], "socket:[") {
			t.Errorf("worker saw %q, want \"<pid> <same pid> 1 web socket:[...]\"", b)
			continue
		}
		sockets[fields[4]] = true
		env, _ := os.ReadFile(filepath.Join(m.dir, "env."+fields[0]))
		for _, bad := range []string{"MWORKER_TRAMPOLINE", "MWORKER_LISTENERS", "MWORKER_STATE"} {
			if strings.Contains(string(env), bad) {
				t.Errorf("worker %s sees %s", fields[0], bad)
			}
		}
	}
	if len(sockets) != 1 {
		t.Errorf("workers saw %d different sockets as fd 3, want the same one across the reload: %v", len(sockets), sockets)
	}
	m.signal(syscall.SIGINT)
	if got := m.wait(20 * time.Second); got != 128+int(syscall.SIGINT) {
		t.Errorf("master exited %d after SIGINT, want 130", got)
	}
}

// A worker starts with the dispositions mworker was started with: SIGINT
// and SIGTTOU ignored here (as for a background job of a script), although
// the master itself catches them, and SIGHUP and SIGTTIN as this test
// process found them (ignored under nohup).
func TestRealWorkerInheritsIgnoredSignals(t *testing.T) {
	t.Parallel()
	script := `grep SigIgn /proc/$$/status > DIR/ign.$$.tmp; mv DIR/ign.$$.tmp DIR/ign.$$; exec sleep 1000`
	m := startMasterArgv(t, []string{"/bin/sh", "-c", `trap "" INT TTOU; exec "$0" master`, testBinary(t)},
		testMaster{Workers: 1, Command: []string{"/bin/sh", "-c", script}})
	var files []string
	e2etest.WaitFor(t, 10*time.Second, "the worker", func() bool {
		files, _ = filepath.Glob(filepath.Join(m.dir, "ign.*[0-9]"))
		return len(files) == 1
	})
	b, _ := os.ReadFile(files[0])
	f := strings.Fields(string(b))
	ign, err := strconv.ParseUint(f[len(f)-1], 16, 64)
	if err != nil {
		t.Fatalf("worker status line %q: %v", b, err)
	}
	bit := func(s syscall.Signal) uint64 { return 1 << (s - 1) }
	if ign&bit(syscall.SIGINT) == 0 || ign&bit(syscall.SIGTTOU) == 0 {
		t.Errorf("worker SigIgn %#x: want SIGINT and SIGTTOU ignored", ign)
	}
	// The shell and the master pass on what this process inherited.
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGTTIN} {
		if want := slices.Contains(startIgnored, s); (ign&bit(s) != 0) != want {
			t.Errorf("worker SigIgn %#x: %v ignored is %v, want %v (as this test was started)", ign, s, ign&bit(s) != 0, want)
		}
	}
	// The master still handles SIGINT (it forwards it; the worker ignores
	// it), and SIGTERM ends everything.
	m.signal(syscall.SIGINT)
	e2etest.WaitFor(t, 10*time.Second, "SIGINT forwarded", func() bool { return m.count("signal=INT") > 0 })
	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 143 {
		t.Errorf("master exited %d, want 143", got)
	}
}

func TestRealPortInUseIsAStartError(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	m := startMaster(t, testBinary(t), testMaster{Workers: 1, Listen: []string{busy.Addr().String()}, Command: []string{"/bin/sh", "-c", "echo started > DIR/started; exec sleep 1000"}})
	if got := m.wait(10 * time.Second); got != 1 {
		t.Errorf("master exited %d, want 1", got)
	}
	out := m.log()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, busy.Addr().String()) {
		t.Errorf("stderr %q: want one line naming %s", out, busy.Addr())
	}
	if _, err := os.Stat(filepath.Join(m.dir, "started")); err == nil {
		t.Error("a worker started although the address could not be bound")
	}
}
