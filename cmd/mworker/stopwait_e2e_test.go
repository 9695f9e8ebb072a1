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
