// Package servers runs real servers behind "mworker run", as their users
// run them, with the recipes of docs/servers.md: each one reloaded at
// least ten times under fresh-connection load (no request may fail) and
// once under keep-alive load (what fails is reported). A server whose
// Debian package is missing is skipped with the package to install
// (scripts/test-deps.sh installs them all).
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

// binDir holds the binaries TestMain builds; tests may build more there.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-servers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/servers:", err)
		os.Exit(1)
	}
	binDir = dir
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

// master is one "mworker run" started by a test, serving on a TCP port of
// 127.0.0.1 and answering on a control socket in the test's directory.
type master struct {
	t       *testing.T
	workers int
	addr    string // 127.0.0.1:PORT
	ctl     string
	log     string
	proc    *e2etest.Process
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

// startMaster runs "mworker run -n WORKERS --listen 127.0.0.1:PORT
// --control DIR/ctl.sock OPTIONS -- COMMAND...", with env added to the
// test's environment, waits until its first generation is ready (status
// says so), and stops it when the test ends.
func startMaster(t *testing.T, workers int, options, env []string, command ...string) *master {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		m := &master{
			t:       t,
			workers: workers,
			addr:    "127.0.0.1:" + strconv.Itoa(freePort(t)),
			ctl:     filepath.Join(dir, "ctl.sock"),
			log:     filepath.Join(dir, fmt.Sprintf("master.%d.log", attempt)),
		}
		args := []string{"run", "-n", strconv.Itoa(workers), "--listen", m.addr, "--control", m.ctl}
		args = append(append(append(args, options...), "--"), command...)
		var fullEnv []string
		if len(env) > 0 {
			fullEnv = append(os.Environ(), env...)
		}
		p, err := e2etest.StartLoggedEnv(m.log, fullEnv, mworkerPath, args...)
		if err != nil {
			t.Fatal(err)
		}
		m.proc = p
		if !e2etest.Poll(60*time.Second, func() bool {
			if m.exited() {
				return true
			}
			s, err := m.status()
			return err == nil && s.settled(workers)
		}) {
			m.stop()
			t.Fatalf("%s: %d workers not ready within 60s; log:\n%s", strings.Join(command, " "), workers, m.lastLog(40))
		}
		if m.exited() {
			if b, _ := os.ReadFile(m.log); bytes.Contains(b, []byte("address already in use")) && attempt < 3 {
				continue // another process took the port: try another
			}
			t.Fatalf("mworker %s exited with status %d before its workers were ready; log:\n%s",
				strings.Join(args, " "), m.proc.Status, m.lastLog(40))
		}
		t.Cleanup(m.stop)
		return m
	}
}

// stop ends the master: SIGTERM (its workers drain), SIGKILL to its
// process group if it is still there after 20s (its workers stop with it:
// PR_SET_PDEATHSIG). On a failed test it logs the master's last lines.
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
	OK      bool   `json:"ok"`
	Error   string `json:"error"`
	Workers []struct {
		Pid        int  `json:"pid"`
		Generation int  `json:"generation"`
		Current    bool `json:"current"`
		Ready      bool `json:"ready"`
	} `json:"workers"`
}

// settled says whether exactly n workers run, all current and ready: no
// generation starting, none draining.
func (s status) settled(n int) bool {
	ready := 0
	for _, w := range s.Workers {
		if w.Current && w.Ready {
			ready++
		}
	}
	return len(s.Workers) == n && ready == n
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
// and nothing else (the old generations have drained).
func (m *master) waitSettled(timeout time.Duration) {
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
// drained.
func (m *master) reloadUnder(l *load, n int) reloadRun {
	m.t.Helper()
	var r reloadRun
	for range n {
		start := time.Now()
		gen, err := m.reload()
		if err != nil {
			m.t.Fatalf("reload %d of %d: %v", r.reloads+1, n, err)
		}
		took := time.Since(start)
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
	m.waitSettled(30 * time.Second)
	return r
}

func (r reloadRun) String() string {
	return fmt.Sprintf("%d reloads; reload command took %s; reload start to first answer of the new generation %s; "+
		"first answer after the old generation was told to stop %s",
		r.reloads, spread(r.took), spread(r.toServe), spread(r.afterReady))
}

// spread is "median M, max X" of ds.
func spread(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v, median %v, max %v", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// load is an HTTP/1.1 load generator over TCP. Each client sends
// "GET /" and reads the answer, again and again until stopped: with
// fresh connections, a new connection for each request ("Connection:
// close"); with keep-alive, one connection for as many requests as the
// server allows (a new one once an answer says "Connection: close" or
// the server closed it after an answer). A failed dial, write or read, a
// status other than 200, or a body without "generation=G", counts as a
// failed request and is never retried.
type load struct {
	addr      string
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

// startLoad starts clients clients against the server at addr.
func startLoad(addr string, clients int, keepAlive bool) *load {
	l := &load{addr: addr, keepAlive: keepAlive, stopping: make(chan struct{}),
		first: make(map[int]time.Time), byGen: make(map[int]int)}
	for range clients {
		l.wg.Add(1)
		go l.client()
	}
	return l
}

var genRE = regexp.MustCompile(`generation=(\d+)`)

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
	req := "GET / HTTP/1.1\r\nHost: " + l.addr + "\r\n"
	if !l.keepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n"
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
				if c, err = net.DialTimeout("tcp", l.addr, 10*time.Second); err != nil {
					c = nil
					return 0, fmt.Errorf("dial: %w", err)
				}
				br, used = bufio.NewReader(c), 0
			}
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(c, req); err != nil {
				return 0, fmt.Errorf("write (request %d of its connection): %w", used+1, err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return 0, fmt.Errorf("read (request %d of its connection): %w", used+1, err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return 0, fmt.Errorf("read the body (request %d of its connection): %w", used+1, err)
			}
			used++
			if !l.keepAlive || resp.Close {
				c.Close()
				c = nil
			}
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("status %s: %q", resp.Status, body)
			}
			m := genRE.FindSubmatch(body)
			if m == nil {
				return 0, fmt.Errorf("no generation=G in the body %q", body)
			}
			g, _ := strconv.Atoi(string(m[1]))
			return g, nil
		}()
		took := time.Since(start)
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
				l.first[gen] = time.Now()
			}
		}
		l.maxWait = max(l.maxWait, took)
		l.mu.Unlock()
		if err != nil {
			if c != nil {
				c.Close()
				c = nil
			}
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
	gens := make([]int, 0, len(r.byGen))
	for g := range r.byGen {
		gens = append(gens, g)
	}
	slices.Sort(gens)
	return fmt.Sprintf("%d requests answered, %d failed %q, longest request %v, %d generations answered",
		r.ok, r.failed, r.failures, r.maxWait.Round(time.Millisecond), len(gens))
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

// recipe is one server's run of the recipe: fresh connections under
// reloads (no failure allowed), then keep-alive under reloads (failures
// reported, or with strictKeepAlive failed on).
type recipe struct {
	workers         int
	options         []string // mworker run's, beyond -n, --listen and --control
	env             []string
	command         []string
	reloads         int // under fresh connections
	keepAlive       int // reloads under keep-alive (0: as many; -1: no keep-alive run)
	clients         int
	strictKeepAlive bool
	// knownFreshFailures reports the failures under fresh connections
	// instead of failing on them: for a server's own flaw that a recipe
	// documents, not for a recipe of docs/servers.md.
	knownFreshFailures bool
}

// run runs the recipe and logs what it measured.
func (rc recipe) run(t *testing.T) {
	t.Helper()
	began := time.Now()
	m := startMaster(t, rc.workers, rc.options, rc.env, rc.command...)
	t.Logf("mworker run %s -- %s: ready in %v", strings.Join(rc.options, " "), strings.Join(rc.command, " "),
		time.Since(began).Round(time.Millisecond))

	for _, keepAlive := range []bool{false, true} {
		if keepAlive && rc.keepAlive < 0 {
			break
		}
		mode := "fresh connections"
		if keepAlive {
			mode = "keep-alive"
		}
		start := time.Now()
		l := startLoad(m.addr, rc.clients, keepAlive)
		// The load reaches the server before the first reload.
		e2etest.WaitFor(t, 30*time.Second, "the first answers", func() bool { return l.answered() >= 20 })
		n := rc.reloads
		if keepAlive && rc.keepAlive > 0 {
			n = rc.keepAlive
		}
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
	t.Logf("total %v", time.Since(began).Round(time.Millisecond))
}
