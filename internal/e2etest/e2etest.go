// Package e2etest holds what the end-to-end tests of several packages
// share: waiting for a condition with a deadline (never sleep-and-hope),
// building a binary of this module for a test run, starting a master with
// its log in a file, and writing a script to execute. Only tests import
// it.
package e2etest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Poll calls cond every 5 ms until it holds or timeout passes, and says
// which.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// WaitFor is Poll that fails the test, naming what it waited for, when
// the deadline passes first.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// ModuleRoot returns the directory of this module's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := string(bytes.TrimSpace(out))
	if err != nil || gomod == "" || gomod == "/dev/null" {
		return "", fmt.Errorf("e2etest: cannot find the module root (go env GOMOD %q): %v", gomod, err)
	}
	return filepath.Dir(gomod), nil
}

// Build builds pkg, a package path relative to the module root such as
// "./cmd/mworker", into dir/name and returns the binary's path.
func Build(dir, name, pkg string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", path, pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("e2etest: go build %s: %v\n%s", pkg, err, out)
	}
	return path, nil
}

// BuildRelease builds ./cmd/mworker into dir/mworker as docs and bench
// build a release (CGO_ENABLED=0, -trimpath) and returns its path.
func BuildRelease(dir string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "mworker")
	cmd := exec.Command("go", "build", "-trimpath", "-o", path, "./cmd/mworker")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("e2etest: go build ./cmd/mworker: %v\n%s", err, out)
	}
	return path, nil
}

// Process is a command a test started with StartLogged.
type Process struct {
	Cmd  *exec.Cmd
	Pid  int
	Done chan struct{} // closed once it has exited
	// Status is its exit status as a shell reports it (the code, or 128 +
	// the signal that killed it); read it only after Done is closed.
	Status int
}

// StartLogged starts binary with args, its stdout and stderr appended to the
// file log, in a process group of its own (so that nothing sent to the
// test's group reaches it), and awaits its exit in the background.
func StartLogged(log, binary string, args ...string) (*Process, error) {
	return StartLoggedEnv(log, nil, binary, args...)
}

// StartLoggedEnv is StartLogged with env as the process's environment
// (nil: the test's own).
func StartLoggedEnv(log string, env []string, binary string, args ...string) (*Process, error) {
	return StartLoggedAttr(log, env, &syscall.SysProcAttr{Setpgid: true}, binary, args...)
}

// StartLoggedAttr is StartLoggedEnv with sys as the process's attributes
// (Setsid for a session of its own) in place of a process group of its
// own.
func StartLoggedAttr(log string, env []string, sys *syscall.SysProcAttr, binary string, args ...string) (*Process, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(binary, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = sys
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, Pid: cmd.Process.Pid, Done: make(chan struct{})}
	go func() {
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		p.Status = ws.ExitStatus()
		if ws.Signaled() {
			p.Status = 128 + int(ws.Signal())
		}
		close(p.Done)
	}()
	return p, nil
}

// WriteExecutable replaces path by a new file with content and mode 0755,
// written by another process (sh and cat). A file the test process held
// open for writing, even for an instant, leaks into any child that another
// parallel test forks at that moment, until that child execs; executing
// the file then fails with ETXTBSY.
func WriteExecutable(path, content string) error {
	os.Remove(path)
	cmd := exec.Command("/bin/sh", "-c", `cat > "$1" && chmod 755 "$1"`, "sh", path)
	cmd.Stdin = strings.NewReader(content)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("write %s: %v: %s", path, err, out)
	}
	return nil
}

// CopyFile installs a new copy of from at to with cp(1), for the same
// reason as WriteExecutable: never a file this process writes, never the
// running one rewritten in place (ETXTBSY).
func CopyFile(from, to string) error {
	os.Remove(to)
	if out, err := exec.Command("cp", from, to).CombinedOutput(); err != nil {
		return fmt.Errorf("cp %s %s: %v: %s", from, to, err, out)
	}
	return nil
}

// SyncBuffer is a buffer that a child's output copier (or a server's
// goroutines) writes while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
