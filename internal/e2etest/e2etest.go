// Package e2etest holds what the end-to-end tests of several packages
// share: waiting for a condition with a deadline (never sleep-and-hope),
// and building a binary of this module for a test run. Only tests import
// it.
package e2etest

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
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
