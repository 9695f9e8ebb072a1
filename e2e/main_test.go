// Package e2e holds end-to-end tests of zero-downtime reloads: the real
// mworker binary, built once by TestMain, serving HTTP through its
// built-in demo worker on a unix listener, reloaded through its control
// socket while a load generator opens fresh connections.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// mworkerPath is the binary under test, built by TestMain.
var mworkerPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	mworkerPath, err = e2etest.Build(dir, "mworker", "./cmd/mworker")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// master is one "mworker run" started by a test, serving HTTP on a unix
// socket and answering on a control socket, both in the test's directory.
type master struct {
	t        *testing.T
	dir      string
	httpSock string
	ctlSock  string
	log      string
	cmd      *exec.Cmd
	pid      int
	done     chan struct{} // closed once the master has exited
}

// startMaster runs "mworker run --listen unix://DIR/http.sock --control
// DIR/ctl.sock OPTIONS -- COMMAND..." and stops it when the test ends.
func startMaster(t *testing.T, dir string, options []string, command ...string) *master {
	t.Helper()
	m := &master{
		t:        t,
		dir:      dir,
		httpSock: filepath.Join(dir, "http.sock"),
		ctlSock:  filepath.Join(dir, "ctl.sock"),
		log:      filepath.Join(dir, "master.log"),
	}
	args := []string{"run", "--listen", "unix://" + m.httpSock, "--control", m.ctlSock}
	args = append(args, options...)
	args = append(args, "--")
	args = append(args, command...)
	p, err := e2etest.StartLogged(m.log, mworkerPath, args...)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd, m.pid, m.done = p.Cmd, p.Pid, p.Done
	t.Cleanup(m.stop)
	return m
}

// stop ends the master: SIGTERM (its workers drain), SIGKILL if it is
// still there after 15s. Its workers stop with it (PR_SET_PDEATHSIG).
func (m *master) stop() {
	if !m.exited() {
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(15 * time.Second):
			m.t.Errorf("master %d still running 15s after SIGTERM; killing it", m.pid)
			m.cmd.Process.Kill()
			<-m.done
		}
	}
	if m.t.Failed() {
		b, _ := os.ReadFile(m.log)
		m.t.Logf("master log (last lines):\n%s", lastLines(string(b), 80))
	}
}

func (m *master) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// status is the control socket's answer to "status" (docs/design.md,
// "Control socket"), decoded here on its own so that the test checks the wire
// format, not a shared Go type.
type status struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Master struct {
		Pid           int    `json:"pid"`
		State         string `json:"state"`
		Generation    int    `json:"generation"`
		Size          int    `json:"size"`
		Reloads       int    `json:"reloads"`
		FailedReloads int    `json:"failed_reloads"`
	} `json:"master"`
	Workers []struct {
		Pid        int    `json:"pid"`
		Generation int    `json:"generation"`
		Slot       int    `json:"slot"`
		Current    bool   `json:"current"`
		Role       string `json:"role"`
		Ready      bool   `json:"ready"`
	} `json:"workers"`
}

// askStatus sends "status" on the control socket: one request line, one
// JSON object back.
func (m *master) askStatus() (status, error) {
	var s status
	c, err := net.DialTimeout("unix", m.ctlSock, 5*time.Second)
	if err != nil {
		return s, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "status\n"); err != nil {
		return s, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return s, err
	}
	if err := json.Unmarshal(line, &s); err != nil {
		return s, fmt.Errorf("bad status answer %q: %w", line, err)
	}
	if !s.OK {
		return s, fmt.Errorf("status answered an error: %s", s.Error)
	}
	return s, nil
}

// currentPids are the pids of the ready workers of the serving generation,
// sorted.
func (s status) currentPids() []int {
	var pids []int
	for _, w := range s.Workers {
		if w.Current && w.Ready {
			pids = append(pids, w.Pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// settled says whether the master runs exactly n ready current workers
// and nothing else: no new generation starting, no old one draining.
func (s status) settled(n int) bool {
	return len(s.Workers) == n && len(s.currentPids()) == n
}

// waitSettled waits until the master runs n ready workers of one
// generation and nothing else, and returns that status.
func (m *master) waitSettled(n int, timeout time.Duration) status {
	m.t.Helper()
	var s status
	var err error
	if !e2etest.Poll(timeout, func() bool {
		if m.exited() {
			m.t.Fatalf("master exited while waiting for %d ready workers", n)
		}
		s, err = m.askStatus()
		return err == nil && s.settled(n)
	}) {
		m.t.Fatalf("no %d ready workers alone within %v: last status %+v, error %v", n, timeout, s, err)
	}
	return s
}

// reload runs "mworker reload --control CTL" and returns its exit status
// and stderr.
func (m *master) reload() (int, string) {
	m.t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(mworkerPath, "reload", "--control", m.ctlSock, "--timeout", "60s")
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err == nil {
		return 0, stderr.String()
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stderr.String()
	}
	m.t.Fatalf("mworker reload: %v", err)
	return -1, ""
}

// fds lists the master's open file descriptors as "N->target".
func fds(pid int) []string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out = append(out, e.Name()+"->"+target)
	}
	return out
}

// holdsSocket says whether pid has an open fd on the socket with inode ino.
func holdsSocket(pid int, ino uint64) bool {
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	for _, f := range fds(pid) {
		if strings.HasSuffix(f, "->"+want) {
			return true
		}
	}
	return false
}

// listeningInode finds the inode of the listening unix socket bound to
// path in /proc/net/unix (accepted connections show the same path, but
// only a listener has __SO_ACCEPTCON in its flags).
func listeningInode(t *testing.T, path string) uint64 {
	t.Helper()
	const soAcceptCon = 0x10000
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	var found []uint64
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) < 8 || f[7] != path {
			continue
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 64)
		ino, err2 := strconv.ParseUint(f[6], 10, 64)
		if err1 == nil && err2 == nil && flags&soAcceptCon != 0 {
			found = append(found, ino)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one listening unix socket bound to %s, found inodes %v", path, found)
	}
	return found[0]
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
