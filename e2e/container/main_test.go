// Package container holds end-to-end tests of mworker where it is
// deployed: as PID 1 of a fresh PID namespace (what a container runtime
// gives its ENTRYPOINT), as an ordinary process that must still reap the
// orphans of its workers (the child subreaper bit), under systemd's own
// socket-activation tool, and with a worker written against go-systemd
// (examples/httpworker). It also checks the unit files of docs/systemd.md
// with systemd-analyze and runs the build and ENTRYPOINT of the Dockerfile
// in docs/containers.md.
//
// TestMain builds mworker and the example worker once. Tests that need a
// tool this host may lack (unshare, systemd-analyze,
// systemd-socket-activate) skip with the reason when it is missing or
// refused; every other failure fails.
//
// The test binary doubles as a worker: started with envHelper set, it runs
// one of the small programs in helperMain instead of the tests.
package container

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// Binaries under test, built by TestMain.
var (
	mworkerPath    string
	httpworkerPath string
	// repoRoot is the module root (the unit files and the Dockerfile are
	// read from its docs/).
	repoRoot string
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(helperMain(mode))
	}
	if os.Getenv(envRunning) != "" {
		fmt.Fprintf(os.Stderr, "e2e/container: the test binary was started as a worker without %s; refusing to run the tests again\n", envHelper)
		os.Exit(104)
	}
	os.Setenv(envRunning, "1")
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	root, err := e2etest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/container:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "mworker-container-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/container:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	for _, b := range []struct {
		path      *string
		name, pkg string
	}{{&mworkerPath, "mworker", "./cmd/mworker"}, {&httpworkerPath, "httpworker", "./examples/httpworker"}} {
		if *b.path, err = e2etest.Build(dir, b.name, b.pkg); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/container:", err)
			return 1
		}
	}
	return m.Run()
}

// process is one started command whose exit the test can await without
// blocking on it.
type process struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed once Wait returned
	err    error         // Wait's result, valid after done
}

// startProcess runs argv with stdout and stderr collected, and kills it (and
// waits) when the test ends if it is still running.
func startProcess(t *testing.T, env []string, argv ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(argv[0], argv[1:]...), stderr: new(syncBuffer), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	// A process the test leaked (an orphan that inherited the output
	// pipe) must not make Wait, and the test, hang.
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
			t.Logf("%s was still running at the end of the test; killed. Its output:\n%s", argv[0], p.stderr)
		}
	})
	return p
}

// exitStatus waits at most timeout for the process to exit and returns
// its status as a shell reports it (128+N when killed by signal N).
func (p *process) exitStatus(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; output:\n%s", p.cmd.Path, timeout, p.stderr)
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// procStat is what the tests read of /proc/PID/stat.
type procStat struct {
	comm  string
	state byte // R, S, D, Z, ...
	ppid  int
}

// readStat reads procRoot/PID/stat; ok is false when the process is gone.
func readStat(procRoot string, pid int) (procStat, bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, false
	}
	// "pid (comm) S ppid ...": comm may hold spaces and parentheses.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	fields := strings.Fields(string(b[end+1:]))
	if len(fields) < 2 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(fields[1])
	if err != nil {
		return procStat{}, false
	}
	return procStat{comm: string(b[open+1 : end]), state: fields[0][0], ppid: ppid}, true
}

// pids lists the processes of procRoot (a /proc mount).
func pids(t *testing.T, procRoot string) []int {
	t.Helper()
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		t.Fatalf("read %s: %v", procRoot, err)
	}
	var out []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// cmdline reads procRoot/PID/cmdline as words; nil when gone.
func cmdline(procRoot string, pid int) []string {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "cmdline"))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}
