package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// mworker stop --wait, its socket from MWORKER_CONTROL, returns once the
// master has exited (its control socket and pid file gone) and exits
// with the master's status: here the workers' 5 after --stop-signal.
func TestStopWait(t *testing.T) {
	t.Parallel()
	m := startRun(t, "", `trap 'exit 5' QUIT
`+idle, "-n", "2", "--ready", "immediate", "--stop-signal", "QUIT",
		"--control", "{dir}/c.sock", "--pidfile", "{dir}/m.pid")
	m.waitWorkers(2)
	sock, pidFile := filepath.Join(m.dir, "c.sock"), filepath.Join(m.dir, "m.pid")
	cmd := exec.Command(mworkerBinary(t), "stop", "--wait", "--timeout", "1m")
	cmd.Env = append(os.Environ(), "MWORKER_CONTROL="+sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := runWithin(t, cmd, 30*time.Second)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 || out.String() != "stopping\nmaster exited with status 5\n" || errb.Len() != 0 {
		t.Fatalf("mworker stop --wait: %v, stdout %q, stderr %q; want exit 5", err, out.String(), errb.String())
	}
	// Told just before it exits: what it removes is gone already.
	for _, p := range []string{sock, pidFile} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s still there when stop --wait returned: %v", p, err)
		}
	}
	if got := m.wait(exitTimeout); got != 5 {
		t.Errorf("master exited %d, stop --wait said 5", got)
	}
}

// runWithin runs cmd and kills it if it has not ended within d.
func runWithin(t *testing.T, cmd *exec.Cmd, d time.Duration) error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		t.Fatalf("%v still running after %v", cmd.Args, d)
		return nil
	}
}

// A --pidfile that cannot be written: one line naming it and the fix,
// exit 1 (a start failure), nothing started.
func TestPidFileUnwritable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{dir, "mworker: --pidfile " + dir + " is a directory: give a file path in it, such as " + filepath.Join(dir, "mworker.pid") + "\n"},
		{dir + "/none/m.pid", "mworker: cannot write --pidfile " + dir + "/none/m.pid: the directory " + dir + "/none does not exist: create it or choose another path\n"},
	} {
		cmd := exec.Command(mworkerBinary(t), "run", "--pidfile", tc.path, "--", "/bin/sh", "-c", "touch "+dir+"/started")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := runWithin(t, cmd, 30*time.Second)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || errb.String() != tc.want {
			t.Errorf("--pidfile %s: %v, stderr %q; want exit 1 and %q", tc.path, err, errb.String(), tc.want)
		}
	}
	if _, err := os.Stat(dir + "/started"); err == nil {
		t.Error("a worker started")
	}
}
