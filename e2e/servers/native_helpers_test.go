package servers

// Helpers of the nginx, HAProxy, node and puma recipes (docs/servers.md):
// the real mworker binary in front of the real server on a TCP listener,
// reloaded under HTTP load. Named native* so that they stand beside the
// helpers of the other recipes.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// nativeNeed skips the test when cmd is not installed, naming the Debian
// package that brings it (scripts/test-deps.sh installs it).
func nativeNeed(t *testing.T, cmd, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(cmd)
	if err != nil {
		t.Skipf("%s not found: install the Debian package %s (sh scripts/test-deps.sh does)", cmd, pkg)
	}
	return path
}

// nativeWrite writes a file the test needs (a configuration, a script).
func nativeWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nativeMaster is one "mworker run" in front of a real server.
type nativeMaster struct {
	t       *testing.T
	bin     string
	addr    string // 127.0.0.1:PORT
	ctl     string
	log     string
	p       *e2etest.Process
	started time.Time
}

// nativeStartMaster runs "mworker run
// --listen 127.0.0.1:PORT --control DIR/ctl.sock OPTIONS -- COMMAND"; the
// master is stopped (SIGTERM, then SIGKILL) when the test ends.
func nativeStartMaster(t *testing.T, dir string, port int, options []string, command ...string) *nativeMaster {
	t.Helper()
	bin := mworkerPath // built once by TestMain (helpers_test.go)
	var err error
	m := &nativeMaster{t: t, bin: bin, addr: "127.0.0.1:" + strconv.Itoa(port),
		ctl: filepath.Join(dir, "ctl.sock"), log: filepath.Join(dir, "master.log")}
	args := append([]string{"run", "--listen", m.addr, "--control", m.ctl}, options...)
	args = append(append(args, "--"), command...)
	m.started = time.Now()
	if m.p, err = e2etest.StartLogged(m.log, bin, args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.kill)
	return m
}

func (m *nativeMaster) exited() bool {
	select {
	case <-m.p.Done:
		return true
	default:
		return false
	}
}

// kill ends a master the test left running, and shows its log when the
// test failed.
func (m *nativeMaster) kill() {
	if !m.exited() {
		syscall.Kill(m.p.Pid, syscall.SIGTERM)
		select {
		case <-m.p.Done:
		case <-time.After(15 * time.Second):
			m.t.Errorf("master %d still running 15s after SIGTERM; killing its group", m.p.Pid)
			syscall.Kill(-m.p.Pid, syscall.SIGKILL)
			<-m.p.Done
		}
	}
	if m.t.Failed() {
		b, _ := os.ReadFile(m.log)
		lines := strings.Split(string(b), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		m.t.Logf("master log (last lines):\n%s", strings.Join(lines, "\n"))
	}
}

// client runs a client command of mworker against the master's control
// socket and returns its exit status and output.
func (m *nativeMaster) client(args ...string) (int, string) {
	cmd := exec.Command(m.bin, append(args, "--control", m.ctl)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		return -1, err.Error()
	}
	return 0, string(out)
}

// nativeStatus is the part of the control socket's status the recipes read.
type nativeStatus struct {
	Master struct {
		Generation int `json:"generation"`
	} `json:"master"`
	Workers []struct {
		Pid     int  `json:"pid"`
		Current bool `json:"current"`
		Ready   bool `json:"ready"`
	} `json:"workers"`
}

// waitReady waits until the master serves n ready workers and nothing
// else (no generation starting or draining).
func (m *nativeMaster) waitReady(n int, timeout time.Duration) nativeStatus {
	m.t.Helper()
	var s nativeStatus
	var last string
	if !e2etest.Poll(timeout, func() bool {
		if m.exited() {
			m.t.Fatalf("master exited with status %d while waiting for %d ready workers", m.p.Status, n)
		}
		code, out := m.client("status", "--json")
		last = out
		if code != 0 || json.Unmarshal([]byte(out), &s) != nil || len(s.Workers) != n {
			return false
		}
		for _, w := range s.Workers {
			if !w.Current || !w.Ready {
				return false
			}
		}
		return true
	}) {
		m.t.Fatalf("no %d ready workers alone within %v; last status: %s", n, timeout, last)
	}
	return s
}

// firstAnswer polls the server until it answers 200 and returns how long
// after the master's start that was: the server's start-up time (the
// master's own is a few ms).
func (m *nativeMaster) firstAnswer(timeout time.Duration) time.Duration {
	m.t.Helper()
	var err error
	if !e2etest.Poll(timeout, func() bool {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", m.addr, time.Second); err != nil {
			return false
		}
		defer c.Close()
		_, err = nativeGet(c, bufio.NewReader(c), false)
		return err == nil
	}) {
		m.t.Fatalf("%s did not answer within %v: %v", m.addr, timeout, err)
	}
	return time.Since(m.started)
}

// reloads runs n "mworker reload" one after the other, each waited for,
// and fails the test unless each succeeds.
func (m *nativeMaster) reloads(n int) {
	m.t.Helper()
	for i := range n {
		if code, out := m.client("reload"); code != 0 {
			m.t.Fatalf("reload %d of %d: exit %d: %s", i+1, n, code, out)
		}
	}
}

// stopWait runs "mworker stop --wait" and returns the master's exit status
// as it reports it.
func (m *nativeMaster) stopWait() int {
	m.t.Helper()
	code, out := m.client("stop", "--wait")
	select {
	case <-m.p.Done:
	case <-time.After(15 * time.Second):
		m.t.Fatalf("master still running 15s after stop --wait answered: %s", out)
	}
	if code != m.p.Status {
		m.t.Errorf("stop --wait exited %d (%s) but the master exited %d", code, out, m.p.Status)
	}
	return m.p.Status
}

// nativeGet sends one GET on c and reads the whole answer; with keepAlive
// false it asks the server to close. It returns whether the server closes
// the connection after this answer.
func nativeGet(c net.Conn, br *bufio.Reader, keepAlive bool) (closing bool, err error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: mworker\r\n"
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return true, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return true, fmt.Errorf("status %s", resp.Status)
	}
	return resp.Close || !keepAlive, nil
}

// nativeLoad is HTTP load on a TCP address: each client sends GETs one
// after the other, on a fresh connection each (keepAlive false) or on one
// connection for as long as the server keeps it open. A failure is a
// request that got no complete 200 answer: a refused or reset connection,
// a connection closed before the answer, a timeout. A keep-alive
// connection the server closes after an answer (Connection: close) is no
// failure; the client opens another.
type nativeLoad struct {
	stopping chan struct{}
	wg       sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failed   int
	failures []string
}

func nativeStartLoad(addr string, clients int, keepAlive bool) *nativeLoad {
	l := &nativeLoad{stopping: make(chan struct{})}
	for range clients {
		l.wg.Add(1)
		go l.client(addr, keepAlive)
	}
	return l
}

func (l *nativeLoad) client(addr string, keepAlive bool) {
	defer l.wg.Done()
	var c net.Conn
	var br *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for {
		select {
		case <-l.stopping:
			return
		default:
		}
		var err error
		closing := true
		if c == nil {
			c, err = net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				br = bufio.NewReader(c)
			} else {
				c = nil
			}
		}
		if err == nil {
			closing, err = nativeGet(c, br, keepAlive)
		}
		if closing && c != nil {
			c.Close()
			c = nil
		}
		l.mu.Lock()
		if err != nil {
			l.failed++
			if len(l.failures) < 5 {
				l.failures = append(l.failures, err.Error())
			}
		} else {
			l.ok++
		}
		l.mu.Unlock()
	}
}

// stop stops the clients after their current request and returns the
// counts.
func (l *nativeLoad) stop() (ok, failed int, failures []string) {
	close(l.stopping)
	l.wg.Wait()
	return l.ok, l.failed, l.failures
}

// nativeRecipe is what each server's test varies.
type nativeRecipe struct {
	workers    int
	options    []string // mworker run options besides --listen and --control
	command    []string
	wantStatus int // the master's exit status after mworker stop --wait
}

// nativeReloads and nativeKeepAliveReloads are the reloads of the
// fresh-connection run (issue 15 asks for at least 10) and of the
// keep-alive run.
const (
	nativeReloads          = 10
	nativeKeepAliveReloads = 4
	nativeClients          = 4
)

// run is each recipe's test: start, measure the time to the first answer,
// 10 reloads under fresh-connection load (no request may fail), a few
// under keep-alive load (failures reported, not failed), then a soft stop
// with the status the recipe documents.
func (rc nativeRecipe) run(t *testing.T, dir string, port int) {
	t.Helper()
	m := nativeStartMaster(t, dir, port, rc.options, rc.command...)
	t.Logf("first answer %v after the master's start", m.firstAnswer(20*time.Second).Round(time.Millisecond))
	m.waitReady(rc.workers, 30*time.Second)

	l := nativeStartLoad(m.addr, nativeClients, false)
	began := time.Now()
	m.reloads(nativeReloads)
	took := time.Since(began)
	ok, failed, failures := l.stop()
	t.Logf("fresh connections: %d reloads in %v: %d answered, %d failed %q", nativeReloads, took.Round(time.Millisecond), ok, failed, failures)
	if failed > 0 || ok == 0 {
		t.Errorf("fresh connections under %d reloads: %d answered, %d failed %q; want none failed", nativeReloads, ok, failed, failures)
	}
	if s := m.waitReady(rc.workers, 30*time.Second); s.Master.Generation != 1+nativeReloads {
		t.Errorf("serving generation %d after %d reloads, want %d", s.Master.Generation, nativeReloads, 1+nativeReloads)
	}

	l = nativeStartLoad(m.addr, nativeClients, true)
	m.reloads(nativeKeepAliveReloads)
	ok, failed, failures = l.stop()
	t.Logf("keep-alive: %d reloads: %d answered, %d failed %q (reported, not a test failure)", nativeKeepAliveReloads, ok, failed, failures)
	if ok == 0 {
		t.Errorf("keep-alive load: nothing answered (%d failed %q)", failed, failures)
	}

	if st := m.stopWait(); st != rc.wantStatus {
		t.Errorf("master exited %d after mworker stop --wait, want %d", st, rc.wantStatus)
	}
}
