// Package chaos is the fault-injection suite: the real mworker binary,
// built as a release is built (CGO_ENABLED=0, -trimpath), run under the
// conditions a long-running production host meets and an operator or an
// attacker can make: hours of uptime compressed with GOGC=1, a log reader
// that stalls, a service manager that does not read its notify socket,
// another uid squatting on names, storms of reload requests, the "fatal"
// signals sent from outside, and a new generation that dies soon after
// start. Each test reproduces a failure seen on an earlier mworker.
package chaos

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/e2etest"
)

// mworkerPath is the binary under test, built by TestMain.
var mworkerPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-chaos-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	// Where other uids (the squatter) can reach the binary.
	os.Chmod(dir, 0o755)
	mworkerPath, err = e2etest.BuildRelease(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// master is one "mworker run" a test started, with its control socket and
// its log in the test's directory.
type master struct {
	t   *testing.T
	dir string
	ctl string // control socket
	log string // stdout and stderr, unless the test gave its own
	p   *e2etest.Process
}

// startMaster runs "mworker run --control DIR/ctl.sock ARGS..." (ARGS
// holds the options, "--" and the command) with its output in DIR/master.log,
// and kills its process group when the test ends.
func startMaster(t *testing.T, args ...string) *master {
	t.Helper()
	return startMasterAttr(t, &syscall.SysProcAttr{Setpgid: true}, args...)
}

// startMasterAttr is startMaster with sys as the master's process
// attributes (Setsid: a session of its own, whose process group is
// orphaned).
func startMasterAttr(t *testing.T, sys *syscall.SysProcAttr, args ...string) *master {
	t.Helper()
	dir := t.TempDir()
	m := &master{t: t, dir: dir, ctl: filepath.Join(dir, "ctl.sock"), log: filepath.Join(dir, "master.log")}
	p, err := e2etest.StartLoggedAttr(m.log, nil, sys, mworkerPath, append([]string{"run", "--control", m.ctl}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	m.p = p
	t.Cleanup(m.kill)
	return m
}

// kill ends the master and whatever is left of its workers.
func (m *master) kill() {
	select {
	case <-m.p.Done:
	default:
		m.p.Cmd.Process.Signal(os.Kill)
		<-m.p.Done
	}
}

// exited says whether the master has exited.
func (m *master) exited() bool {
	select {
	case <-m.p.Done:
		return true
	default:
		return false
	}
}

// logText is the master's log so far.
func (m *master) logText() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// ask sends one control request and decodes the answer.
func ask(ctl, cmd string, timeout time.Duration) (control.Answer, error) {
	var a control.Answer
	c, err := net.DialTimeout("unix", ctl, timeout)
	if err != nil {
		return a, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return a, err
	}
	dec := json.NewDecoder(c)
	if err := dec.Decode(&a); err != nil {
		return a, fmt.Errorf("%s: no answer: %w", cmd, err)
	}
	return a, nil
}

// status asks for the master's status.
func (m *master) status(timeout time.Duration) (control.Answer, error) {
	return ask(m.ctl, "status", timeout)
}

// waitServing waits until n workers of one generation are current and
// ready, no reload is under way and no old worker is left, and returns
// that status.
func (m *master) waitServing(n int, timeout time.Duration) control.Answer {
	m.t.Helper()
	var last control.Answer
	ok := e2etest.Poll(timeout, func() bool {
		if m.exited() {
			return true
		}
		a, err := m.status(2 * time.Second)
		if err != nil || a.Master == nil || a.Master.State != "running" {
			return false
		}
		last = a
		ready := 0
		for _, w := range a.Workers {
			if !w.Current || !w.Ready {
				return false
			}
			ready++
		}
		return ready == n
	})
	if m.exited() {
		m.t.Fatalf("master exited (status %d) while waiting for %d workers; log:\n%s", m.p.Status, n, m.logText())
	}
	if !ok {
		m.t.Fatalf("timed out waiting for %d ready workers; last status %+v; log:\n%s", n, last, m.logText())
	}
	return last
}

// currentPids are the pids of the current workers in a.
func currentPids(a control.Answer) []int {
	var pids []int
	for _, w := range a.Workers {
		if w.Current {
			pids = append(pids, w.Pid)
		}
	}
	return pids
}

// fdTargets maps each open fd of pid to what it points at
// ("socket:[123]", a path...).
func fdTargets(pid int) map[string]string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	out := make(map[string]string, len(ents))
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out[e.Name()] = t
		}
	}
	return out
}

// lastLines is the end of a log, for a failure message.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
