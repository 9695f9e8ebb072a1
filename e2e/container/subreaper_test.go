package container

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// TestSubreaperAdoptsGrandchildren: not PID 1, mworker sets the child
// subreaper bit (the kernel shows it nowhere in /proc, so the test checks
// what it does): a process that a worker double-forks and abandons gets
// mworker as its parent, not init, and mworker reaps it when it dies,
// without logging it above debug level.
func TestSubreaperAdoptsGrandchildren(t *testing.T) {
	dir := t.TempDir()
	gpidFile := filepath.Join(dir, "gpid")
	// The subshell starts sleep and exits: sleep is orphaned while the
	// worker itself stays.
	script := `(sleep 1000 & echo $! > "$1.tmp" && mv "$1.tmp" "$1"); exec sleep 100000`
	m := startProcess(t, nil, mworkerPath, "run", "--restart", "no", "--", "sh", "-c", script, "sh", gpidFile)
	master := m.cmd.Process.Pid

	var gpid int
	e2etest.WaitFor(t, 10*time.Second, "the worker to write its grandchild's pid", func() bool {
		b, err := os.ReadFile(gpidFile)
		if err != nil {
			return false
		}
		gpid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	})
	t.Cleanup(func() {
		// Should the test fail before it kills the grandchild, which
		// outlives the master, do not leave it behind.
		if st, ok := readStat("/proc", gpid); ok && st.comm == "sleep" {
			syscall.Kill(gpid, syscall.SIGKILL)
		}
	})
	// Its parent is the subshell (by then perhaps exec'd into mv) until
	// that exits; then the kernel reparents it to the nearest subreaper,
	// or to init when there is none.
	var parent int
	deadline := time.Now().Add(10 * time.Second)
	for parent != master {
		st, ok := readStat("/proc", gpid)
		if !ok {
			t.Fatalf("grandchild %d vanished before it was killed", gpid)
		}
		parent = st.ppid
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d has pid %d (%s) as parent after 10s, want the master %d: the child subreaper bit is not set",
				gpid, parent, readComm(parent), master)
		}
		time.Sleep(5 * time.Millisecond)
	}

	if err := syscall.Kill(gpid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 5*time.Second, "the master to reap its adopted grandchild", func() bool {
		_, exists := readStat("/proc", gpid)
		return !exists
	})

	if err := syscall.Kill(master, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := m.exitStatus(t, 20*time.Second); got != 143 {
		t.Fatalf("master exited %d, want 143 (its worker, sleep, killed by the forwarded SIGTERM); output:\n%s", got, m.stderr)
	}
	if out := m.stderr.String(); regexp.MustCompile(`\bpid=` + strconv.Itoa(gpid) + `\b`).MatchString(out) {
		t.Fatalf("the adopted grandchild %d is logged above debug level:\n%s", gpid, out)
	}
}

// readComm returns the command name of pid, "" when it is gone.
func readComm(pid int) string {
	st, ok := readStat("/proc", pid)
	if !ok {
		return ""
	}
	return st.comm
}
