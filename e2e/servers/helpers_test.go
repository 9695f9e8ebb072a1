// Package servers runs real servers behind "mworker run", as their users
// run them, with the recipes of docs/servers.md: each one reloaded at
// least ten times under fresh-connection load (no request may fail),
// then under keep-alive load (what fails is reported, or failed on for a
// server that drains keep-alive connections cleanly), then stopped with
// "mworker stop --wait". A server whose Debian package is missing is
// skipped with the package to install (scripts/test-deps.sh installs
// them all).
//
// This file holds what the recipes share: the mworker binary (built once
// by TestMain), a master on a TCP port of loopback, its control socket,
// and a load generator that speaks HTTP/1.1 on raw TCP connections, as
// wrk does: no retry of a failed request, so every connection the server
// drops counts.
package servers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// mworkerPath is the binary under test, built by TestMain.
var mworkerPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-servers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/servers:", err)
		os.Exit(1)
	}
	mworkerPath, err = e2etest.Build(dir, "mworker", "./cmd/mworker")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/servers:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips the test when cmd is not installed, naming the Debian
// package that brings it (scripts/test-deps.sh installs it), and returns
// its path.
func need(t *testing.T, cmd, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(cmd)
	if err != nil {
		t.Skipf("%s not found: install the Debian package %s (sh scripts/test-deps.sh does)", cmd, pkg)
	}
	return path
}

// writeFile writes a file the server reads (a configuration, an
// application).
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// freePort asks the kernel for a free TCP port of 127.0.0.1. Another
// process may take it before mworker binds it: startMaster then tries
// another.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// master is one "mworker run" started by a test, serving on a TCP port of
// 127.0.0.1 and answering on a control socket in the test's directory.
type master struct {
	t       *testing.T
	workers int
	addr    string // 127.0.0.1:PORT
	ctl     string
	log     string
	proc    *e2etest.Process

	mu    sync.Mutex
	genOf map[int]int // generationOf's answers
}

// startMaster writes the recipe's configuration for a free port and runs
// "mworker run -n WORKERS --listen 127.0.0.1:PORT --control DIR/ctl.sock
// OPTIONS -- COMMAND...", with the recipe's env added to the test's
// environment; it returns once the server has answered a first request
// and the first generation is settled (status says so), with the time
// from the master's start to that first answer. The master is stopped
// when the test ends.
func startMaster(t *testing.T, rc recipe) (*master, time.Duration) {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		port := freePort(t)
		if rc.config != nil {
			rc.config(port)
		}
		m := &master{
			t:       t,
			workers: rc.workers,
			addr:    "127.0.0.1:" + strconv.Itoa(port),
			ctl:     filepath.Join(dir, "ctl.sock"),
			log:     filepath.Join(dir, fmt.Sprintf("master.%d.log", attempt)),
			genOf:   make(map[int]int),
		}
		args := []string{"run", "-n", strconv.Itoa(rc.workers), "--listen", m.addr, "--control", m.ctl}
		args = append(append(append(args, rc.options...), "--"), rc.command...)
		var env []string
		if len(rc.env) > 0 {
			env = append(os.Environ(), rc.env...)
		}
		started := time.Now()
		p, err := e2etest.StartLoggedEnv(m.log, env, mworkerPath, args...)
		if err != nil {
			t.Fatal(err)
		}
		m.proc = p
		var firstErr error
		answered := e2etest.Poll(60*time.Second, func() bool {
			if m.exited() {
				return true
			}
			c, err := net.DialTimeout("tcp", m.addr, time.Second)
			if err == nil {
				_, _, err = request(c, bufio.NewReader(c), m.addr, false)
				c.Close()
			}
			firstErr = err
			return err == nil
		})
		first := time.Since(started)
		if m.exited() {
			if b, _ := os.ReadFile(m.log); bytes.Contains(b, []byte("address already in use")) && attempt < 3 {
				continue // another process took the port: try another
			}
			t.Fatalf("mworker %s exited with status %d before its workers were ready; log:\n%s",
				strings.Join(args, " "), m.proc.Status, m.lastLog(40))
		}
		t.Cleanup(m.stop)
		if !answered {
			t.Fatalf("%s: no answer within 60s: %v", m.addr, firstErr)
		}
		m.waitSettled(60 * time.Second)
		return m, first
	}
}

// stop ends the master if it still runs: SIGTERM (its workers drain),
// SIGKILL to its process group if it is still there after 20s (its
// workers stop with it: PR_SET_PDEATHSIG). On a failed test it logs the
// master's last lines.
func (m *master) stop() {
	if !m.exited() {
		m.proc.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.proc.Done:
		case <-time.After(20 * time.Second):
			m.t.Errorf("master %d still running 20s after SIGTERM; killing its process group", m.proc.Pid)
			syscall.Kill(-m.proc.Pid, syscall.SIGKILL)
			<-m.proc.Done
		}
	}
	if m.t.Failed() {
		m.t.Logf("master log (last lines):\n%s", m.lastLog(60))
	}
}

// stopWait runs "mworker stop --wait", which returns once the master has
// exited, and returns the master's exit status; the command's own exit
// status must be the same.
func (m *master) stopWait() int {
	m.t.Helper()
	out, err := exec.Command(mworkerPath, "stop", "--wait", "--control", m.ctl).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		m.t.Fatalf("mworker stop --wait: %v", err)
	}
	select {
	case <-m.proc.Done:
	case <-time.After(20 * time.Second):
		m.t.Fatalf("master still running 20s after mworker stop --wait answered: %s", out)
	}
	if code != m.proc.Status {
		m.t.Errorf("mworker stop --wait exited %d (%s) but the master exited %d", code, out, m.proc.Status)
	}
	return m.proc.Status
}

// socketMode says whether the listening socket is non-blocking, as the
// master's copy shows it: the flag belongs to the open file description
// the master and the servers share, so it shows what the server (or
// --listen-nonblocking) made of it.
func (m *master) socketMode() string {
	_, port, _ := net.SplitHostPort(m.addr)
	p, _ := strconv.Atoi(port)
	tcp, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	inode := ""
	want := fmt.Sprintf("0100007F:%04X", p)
	for _, l := range strings.Split(string(tcp), "\n") {
		f := strings.Fields(l)
		if len(f) > 9 && f[1] == want && f[3] == "0A" { // LISTEN
			inode = f[9]
		}
	}
	dir := "/proc/" + strconv.Itoa(m.proc.Pid) + "/fd/"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if link, _ := os.Readlink(dir + e.Name()); inode == "" || link != "socket:["+inode+"]" {
			continue
		}
		info, err := os.ReadFile("/proc/" + strconv.Itoa(m.proc.Pid) + "/fdinfo/" + e.Name())
		if err != nil {
			break
		}
		for _, l := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(l, "flags:"); ok {
				fl, _ := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if fl&syscall.O_NONBLOCK != 0 {
					return "non-blocking"
				}
				return "blocking"
			}
		}
	}
	return "unknown (the master's copy not found)"
}

// waitEveryWorkerAnswers sends requests on fresh connections until each
// worker the master runs has answered one (its pid, or its child's, in
// the body): every server is then past its start, handler installed.
func (m *master) waitEveryWorkerAnswers(timeout time.Duration) {
	m.t.Helper()
	s := m.waitSettled(timeout)
	pending := make(map[int]bool)
	for _, w := range s.Workers {
		pending[w.Pid] = true
	}
	sent, last := 0, ""
	if !e2etest.Poll(timeout, func() bool {
		for range 20 {
			sent++
			c, err := net.DialTimeout("tcp", m.addr, 10*time.Second)
			if err != nil {
				last = err.Error()
				return false
			}
			body, _, err := request(c, bufio.NewReader(c), m.addr, false)
			c.Close()
			if err != nil {
				last = err.Error()
				return false
			}
			p := pidRE.FindSubmatch(body)
			if p == nil {
				m.t.Fatalf("no pid N in the answer %q", body)
			}
			pid, _ := strconv.Atoi(string(p[1]))
			delete(pending, pid)
			delete(pending, parentOf(pid))
			if len(pending) == 0 {
				return true
			}
		}
		return false
	}) {
		m.t.Fatalf("after %d requests, workers %v have not answered (last error %q)", sent, pending, last)
	}
}

func (m *master) exited() bool {
	select {
	case <-m.proc.Done:
		return true
	default:
		return false
	}
}

func (m *master) lastLog(n int) string {
	b, _ := os.ReadFile(m.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// status is the control socket's answer to "status", the fields these
// tests read.
type status struct {
	OK     bool   `json:"ok"`
	Error  string `json:"error"`
	Master struct {
		Generation    int `json:"generation"`
		Reloads       int `json:"reloads"`
		FailedReloads int `json:"failed_reloads"`
	} `json:"master"`
	Workers []struct {
		Pid        int  `json:"pid"`
		Generation int  `json:"generation"`
		Current    bool `json:"current"`
		Ready      bool `json:"ready"`
	} `json:"workers"`
}

// settled says whether exactly n workers run, all of the master's
// generation, current and ready: no generation starting, none draining.
func (s status) settled(n int) bool {
	if len(s.Workers) != n {
		return false
	}
	for _, w := range s.Workers {
		if !w.Current || !w.Ready || w.Generation != s.Master.Generation {
			return false
		}
	}
	return true
}

// status asks the master for its status on the control socket.
func (m *master) status() (status, error) {
	var s status
	c, err := net.DialTimeout("unix", m.ctl, 5*time.Second)
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

// waitSettled waits until the master runs its workers of one generation
// and nothing else (the old generations have drained), and returns that
// status.
func (m *master) waitSettled(timeout time.Duration) status {
	m.t.Helper()
	var s status
	var err error
	if !e2etest.Poll(timeout, func() bool {
		s, err = m.status()
		return m.exited() || err == nil && s.settled(m.workers)
	}) || m.exited() {
		m.t.Fatalf("not settled on %d ready workers within %v (master exited: %v): last status %+v, error %v",
			m.workers, timeout, m.exited(), s, err)
	}
	return s
}

// generationOf is the generation of the worker that is pid or pid's
// parent (a server whose master process is mworker's worker answers from
// a child: nginx), 0 when the master runs no such worker (any more).
func (m *master) generationOf(pid int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g, ok := m.genOf[pid]; ok {
		return g
	}
	s, err := m.status()
	if err != nil {
		return 0
	}
	ppid := parentOf(pid)
	m.genOf[pid] = 0 // asked once: pid is gone, or answered for nobody
	for _, w := range s.Workers {
		if w.Pid == pid || w.Pid == ppid {
			m.genOf[pid] = w.Generation
		}
	}
	return m.genOf[pid]
}

// parentOf is pid's parent according to /proc/PID/stat, 0 once pid is
// gone.
func parentOf(pid int) int {
	p, _ := e2etest.ReadProc(pid)
	return p.Ppid
}

// reload runs "mworker reload --control CTL --json", which returns once
// the new generation is ready, and returns that generation.
func (m *master) reload() (int, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(mworkerPath, "reload", "--control", m.ctl, "--json", "--timeout", "60s")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("mworker reload: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var a struct {
		Reload struct {
			Result     string `json:"result"`
			Generation int    `json:"generation"`
		} `json:"reload"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &a); err != nil || a.Reload.Result != "success" {
		return 0, fmt.Errorf("mworker reload answered %q (%v)", stdout.String(), err)
	}
	return a.Reload.Generation, nil
}

// reloadRun is what a series of reloads under load measured.
type reloadRun struct {
	reloads int
	// in is the time from the first reload command's start to the last
	// one's end.
	in time.Duration
	// took is how long each reload command took: until the new
	// generation counted as ready and the old one was told to stop.
	took []time.Duration
	// toServe is, for each reload, the time from the reload command's
	// start to the first answer of its generation the load received.
	toServe []time.Duration
	// afterReady is toServe minus took: how long after the old generation
	// was told to stop the new one answered its first request (negative:
	// it answered before). A positive value is a stall: a window in which
	// requests waited in the socket's queue with nobody accepting.
	afterReady []time.Duration
}

// reloadUnder reloads m n times while l runs, each reload once the
// previous one's generation has answered a request and at most one older
// generation is still draining (old generations never pile up to
// --max-old-generations), and returns once every old generation has
// drained and the master serves generation start+n, with no failed
// reload.
func (m *master) reloadUnder(l *load, n int) reloadRun {
	m.t.Helper()
	var r reloadRun
	s0 := m.waitSettled(30 * time.Second)
	began := time.Now()
	for range n {
		start := time.Now()
		gen, err := m.reload()
		if err != nil {
			m.t.Fatalf("reload %d of %d: %v", r.reloads+1, n, err)
		}
		took := time.Since(start)
		r.in = time.Since(began)
		r.took = append(r.took, took)
		r.reloads++
		var first time.Time
		e2etest.WaitFor(m.t, 30*time.Second, fmt.Sprintf("an answer from generation %d", gen), func() bool {
			first = l.firstAnswer(gen)
			return !first.IsZero()
		})
		r.toServe = append(r.toServe, first.Sub(start))
		r.afterReady = append(r.afterReady, first.Sub(start)-took)
		var s status
		e2etest.WaitFor(m.t, 30*time.Second, "at most one old generation draining", func() bool {
			s, err = m.status()
			return m.exited() || err == nil && len(s.Workers) <= 2*m.workers
		})
	}
	s := m.waitSettled(30 * time.Second)
	if s.Master.Generation != s0.Master.Generation+n || s.Master.FailedReloads != s0.Master.FailedReloads {
		m.t.Errorf("after %d reloads from generation %d: serving generation %d, %d failed reloads (want %d, %d)",
			n, s0.Master.Generation, s.Master.Generation, s.Master.FailedReloads, s0.Master.Generation+n, s0.Master.FailedReloads)
	}
	return r
}

func (r reloadRun) String() string {
	return fmt.Sprintf("%d reloads in %v; reload command took %s; reload start to first answer of the new generation %s; "+
		"first answer after the old generation was told to stop %s",
		r.reloads, r.in.Round(time.Millisecond), spread(r.took), spread(r.toServe), spread(r.afterReady))
}

// spread is "min N, median M, max X" of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v, median %v, max %v", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

var (
	genRE = regexp.MustCompile(`generation=(\d+)`)
	pidRE = regexp.MustCompile(`\bpid[= ](\d+)`)
)

// request sends "GET /" on c (with "Connection: close" unless keepAlive)
// and reads the whole answer. It returns the body and whether the
// connection is done with: the server said "Connection: close", or the
// client did, or the request failed. A status other than 200 is an error.
func request(c net.Conn, br *bufio.Reader, host string, keepAlive bool) (body []byte, closing bool, err error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\n"
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return nil, true, fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, true, fmt.Errorf("read: %w", err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, true, fmt.Errorf("read the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, true, fmt.Errorf("status %s: %q", resp.Status, body)
	}
	return body, resp.Close || !keepAlive, nil
}

// load is an HTTP/1.1 load generator over TCP. Each client sends
// "GET /" and reads the answer, again and again until stopped: with
// fresh connections, a new connection for each request ("Connection:
// close"); with keep-alive, one connection for as many requests as the
// server allows (a new one once an answer says "Connection: close"). A
// failed dial, write or read (a connection the server closed or reset
// before answering included), a status other than 200, or a body that
// says neither "generation=G" nor "pid N", counts as a failed request
// and is never retried. The generation of an answer is G, or the one
// whose worker is N or N's parent.
type load struct {
	m         *master
	keepAlive bool
	stopping  chan struct{}
	wg        sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failed   int
	failures []string // the first few
	first    map[int]time.Time
	byGen    map[int]int
	maxWait  time.Duration // the longest request
}

// startLoad starts clients clients against m's server.
func startLoad(m *master, clients int, keepAlive bool) *load {
	l := &load{m: m, keepAlive: keepAlive, stopping: make(chan struct{}),
		first: make(map[int]time.Time), byGen: make(map[int]int)}
	for range clients {
		l.wg.Add(1)
		go l.client()
	}
	return l
}

func (l *load) client() {
	defer l.wg.Done()
	var c net.Conn
	var br *bufio.Reader
	used := 0 // requests answered on c
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
		start := time.Now()
		gen, err := func() (int, error) {
			if c == nil {
				var err error
				if c, err = net.DialTimeout("tcp", l.m.addr, 10*time.Second); err != nil {
					c = nil
					return 0, fmt.Errorf("dial: %w", err)
				}
				br, used = bufio.NewReader(c), 0
			}
			body, closing, err := request(c, br, l.m.addr, l.keepAlive)
			if closing {
				c.Close()
				c = nil
			}
			if err != nil {
				return 0, fmt.Errorf("request %d of its connection: %w", used+1, err)
			}
			used++
			if g := genRE.FindSubmatch(body); g != nil {
				n, _ := strconv.Atoi(string(g[1]))
				return n, nil
			}
			if p := pidRE.FindSubmatch(body); p != nil && !bytes.Contains(body, []byte("generation=")) {
				pid, _ := strconv.Atoi(string(p[1]))
				return -pid, nil
			}
			return 0, fmt.Errorf("neither generation=G nor pid N in the body %q", body)
		}()
		took := time.Since(start)
		if gen < 0 {
			gen = l.m.generationOf(-gen)
		}
		l.mu.Lock()
		if err != nil {
			l.failed++
			if len(l.failures) < 5 {
				l.failures = append(l.failures, err.Error())
			}
		} else {
			l.ok++
			l.byGen[gen]++
			if l.first[gen].IsZero() {
				l.first[gen] = start.Add(took)
			}
		}
		l.maxWait = max(l.maxWait, took)
		l.mu.Unlock()
		if err != nil {
			// A refused dial must not spin a core the servers need.
			select {
			case <-l.stopping:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// firstAnswer is when the first answer of generation gen arrived (zero:
// none yet).
func (l *load) firstAnswer(gen int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.first[gen]
}

// answered is how many requests have been answered, failed or not.
func (l *load) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok + l.failed
}

// loadResult is what a load saw.
type loadResult struct {
	ok, failed int
	failures   []string
	byGen      map[int]int
	maxWait    time.Duration
}

func (r loadResult) String() string {
	gens := 0
	for g := range r.byGen {
		if g != 0 {
			gens++
		}
	}
	return fmt.Sprintf("%d requests answered, %d failed %q, longest request %v, %d generations answered",
		r.ok, r.failed, r.failures, r.maxWait.Round(time.Millisecond), gens)
}

// stop stops the clients, waits for their last requests and returns what
// they saw.
func (l *load) stop() loadResult {
	close(l.stopping)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadResult{ok: l.ok, failed: l.failed, failures: l.failures, byGen: l.byGen, maxWait: l.maxWait}
}

// recipe is one server's run of its recipe: started, reloaded under
// fresh-connection load (no failure allowed), under keep-alive load
// (failures reported, or with strictKeepAlive failed on), then stopped
// with "mworker stop --wait".
type recipe struct {
	workers int
	options []string // mworker run's, beyond -n, --listen and --control
	env     []string
	command []string
	// config, if set, writes the server's configuration for the port the
	// master is about to listen on (nginx must listen on the same
	// address); it is called again if a start is retried on another port.
	config    func(port int)
	reloads   int // under fresh connections
	keepAlive int // reloads under keep-alive (0: no keep-alive run)
	clients   int
	// strictKeepAlive fails on a keep-alive request that failed, for a
	// server that drains keep-alive connections cleanly.
	strictKeepAlive bool
	// knownFreshFailures reports the failures under fresh connections
	// instead of failing on them: for a server's own flaw that a recipe
	// documents, not for a recipe of docs/servers.md.
	knownFreshFailures bool
	// wantStatus is the master's exit status after mworker stop --wait.
	wantStatus int
}

// run runs the recipe and logs what it measured.
func (rc recipe) run(t *testing.T) {
	t.Helper()
	began := time.Now()
	m, first := startMaster(t, rc)
	t.Logf("mworker run %s -- %s: first answer %v after the master's start, ready in %v; listening socket %s", strings.Join(rc.options, " "),
		strings.Join(rc.command, " "), first.Round(time.Millisecond), time.Since(began).Round(time.Millisecond), m.socketMode())

	for _, keepAlive := range []bool{false, true} {
		n, mode := rc.reloads, "fresh connections"
		if keepAlive {
			n, mode = rc.keepAlive, "keep-alive"
		}
		if n == 0 {
			continue
		}
		start := time.Now()
		l := startLoad(m, rc.clients, keepAlive)
		// The load reaches the server before the first reload.
		e2etest.WaitFor(t, 30*time.Second, "the first answers", func() bool { return l.answered() >= 20 })
		rr := m.reloadUnder(l, n)
		res := l.stop()
		t.Logf("%s, %d clients: %v; %v; %v", mode, rc.clients, res, rr, time.Since(start).Round(time.Millisecond))
		if res.ok == 0 {
			t.Errorf("%s: no request answered", mode)
		}
		if res.failed > 0 {
			if keepAlive && rc.strictKeepAlive || !keepAlive && !rc.knownFreshFailures {
				t.Errorf("%s: %d of %d requests failed under %d reloads: %q", mode, res.failed, res.ok+res.failed, rr.reloads, res.failures)
			} else {
				t.Logf("%s: %d of %d requests failed under %d reloads (%.1f per reload; reported, not failed): %q",
					mode, res.failed, res.ok+res.failed, rr.reloads, float64(res.failed)/float64(rr.reloads), res.failures)
			}
		}
	}
	// A stop must find every worker up: one told to stop before it has
	// installed its handler dies of the signal, as documented, and the
	// master's status says so (a node worker "ready" by --ready 1s had not
	// yet run its script in a loaded CI run: status 143).
	m.waitEveryWorkerAnswers(30 * time.Second)
	if st := m.stopWait(); st != rc.wantStatus {
		t.Errorf("master exited %d after mworker stop --wait, want %d", st, rc.wantStatus)
	}
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}
