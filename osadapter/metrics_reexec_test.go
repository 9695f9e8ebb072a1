package osadapter

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
	"github.com/mworker/mworker/internal/listen"
)

// probeTally counts a prober's outcomes by kind.
type probeTally struct {
	mu sync.Mutex
	n  int
	// by kind: "200", "503", "refused", "cut" (the connection closed or
	// reset before a whole answer), "cut-reused" (the same, on a
	// keep-alive connection that had answered before), "status NNN",
	// "timeout", "other".
	kinds   map[string]int
	samples []string
	slowest time.Duration
}

func (p *probeTally) note(kind, detail string, took time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	if p.kinds == nil {
		p.kinds = map[string]int{}
	}
	p.kinds[kind]++
	if kind != "200" && kind != "503" && len(p.samples) < 8 {
		p.samples = append(p.samples, kind+": "+detail)
	}
	p.slowest = max(p.slowest, took)
}

func (p *probeTally) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n - p.kinds["200"] - p.kinds["503"]
}

func (p *probeTally) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.kinds))
	for k := range p.kinds {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d probes:", p.n)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, p.kinds[k])
	}
	fmt.Fprintf(&b, "; slowest %v", p.slowest.Round(time.Millisecond))
	if len(p.samples) > 0 {
		fmt.Fprintf(&b, "; e.g. %q", p.samples)
	}
	return b.String()
}

// classify names a probe's failure.
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "cut"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// clientLoop asks path at addr until stop is closed with Go's
// http.Client, keeping connections alive as Prometheus's scrapers do: its
// Transport retries an idempotent request that a reused connection lost.
func clientLoop(addr, path string, stop <-chan struct{}, tally *probeTally) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for {
		select {
		case <-stop:
			return
		default:
		}
		began := time.Now()
		resp, err := c.Get("http://" + addr + path)
		if err != nil {
			tally.note(classify(err), err.Error(), time.Since(began))
			continue
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			tally.note(classify(err), "body: "+err.Error(), time.Since(began))
		case resp.StatusCode != 200 && resp.StatusCode != 503:
			tally.note("status "+strconv.Itoa(resp.StatusCode), resp.Status, time.Since(began))
		default:
			tally.note(strconv.Itoa(resp.StatusCode), "", time.Since(began))
		}
	}
}

// probeLoop asks path at addr until stop is closed, over raw connections
// so that nothing retries on its behalf: a new connection per request
// (as the kubelet's probes do) or, with keepAlive, one connection reused
// for as long as the server keeps it (as Prometheus does, less its
// retries).
func probeLoop(addr, path string, keepAlive bool, stop <-chan struct{}, tally *probeTally) {
	var c net.Conn
	var br *bufio.Reader
	answered := 0 // on c
	req := "GET " + path + " HTTP/1.1\r\nHost: mworker\r\n"
	if !keepAlive {
		req += "Connection: close\r\n"
	}
	req += "\r\n"
	drop := func() {
		if c != nil {
			c.Close()
		}
		c, br, answered = nil, nil, 0
	}
	defer drop()
	for {
		select {
		case <-stop:
			return
		default:
		}
		began := time.Now()
		if c == nil {
			var err error
			c, err = net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				c = nil
				tally.note(classify(err), err.Error(), time.Since(began))
				continue
			}
			br = bufio.NewReader(c)
		}
		c.SetDeadline(began.Add(5 * time.Second))
		kind, detail := func() (string, string) {
			if _, err := io.WriteString(c, req); err != nil {
				return classify(err), "write: " + err.Error()
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return classify(err), "read: " + err.Error()
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return classify(err), "body: " + err.Error()
			}
			if !keepAlive || resp.Close {
				drop()
			}
			if resp.StatusCode != 200 && resp.StatusCode != 503 {
				return "status " + strconv.Itoa(resp.StatusCode), resp.Status
			}
			return strconv.Itoa(resp.StatusCode), ""
		}()
		if kind != "200" && kind != "503" {
			if kind == "cut" && answered > 0 {
				kind = "cut-reused"
			}
			drop()
		} else if c != nil {
			answered++
		}
		tally.note(kind, detail, time.Since(began))
	}
}

// Probes of --metrics over TCP while the master re-executes on every
// reload: the socket and its queue are handed to the next image, and the
// old image answers every request it accepted, so no probe on a new
// connection may be refused, cut or left unanswered. /healthz and /readyz
// close the connection after each answer, so a prober that would keep it
// alive loses nothing either. A keep-alive /metrics scraper may lose a
// request to the race HTTP/1.1 leaves open (a client reusing a connection
// the server closes as idle, which clients retry): those are counted,
// not failed.
func TestRealMetricsProbesAcrossReexecs(t *testing.T) {
	t.Parallel()
	const reloads = 60
	bin := testBinary(t)
	m := startMaster(t, bin, testMaster{Workers: 1, Command: []string{"/bin/sh", "-c", "exec sleep 1000"}, Metrics: "127.0.0.1:0"})
	var addr string
	serving := regexp.MustCompile(`metrics: serving.*address=http://(127\.0\.0\.1:[0-9]+)`)
	e2etest.WaitFor(t, 20*time.Second, "the metrics: serving line", func() bool {
		if mm := serving.FindStringSubmatch(m.log()); mm != nil {
			addr = mm[1]
		}
		return addr != ""
	})
	e2etest.WaitFor(t, 20*time.Second, "/readyz 200", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /readyz HTTP/1.1\r\nHost: mworker\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})

	type prober struct {
		path      string
		keepAlive bool
		goClient  bool // Go's http.Client, with keep-alive
		tally     probeTally
	}
	probers := []*prober{
		{path: "/readyz"},
		{path: "/readyz"},
		{path: "/healthz"},
		{path: "/metrics"},
		{path: "/readyz", keepAlive: true},
		{path: "/metrics", keepAlive: true},
		{path: "/metrics", goClient: true},
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range probers {
		if p.goClient {
			wg.Go(func() { clientLoop(addr, p.path, stop, &p.tally) })
		} else {
			wg.Go(func() { probeLoop(addr, p.path, p.keepAlive, stop, &p.tally) })
		}
	}
	stopped := false
	end := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer end()
	began := time.Now()
	for i := 1; i <= reloads; i++ {
		m.signal(syscall.SIGUSR2)
		e2etest.WaitFor(t, 20*time.Second, "reload "+strconv.Itoa(i), func() bool { return m.count("reload complete") == i })
	}
	took := time.Since(began)
	end()
	if n := m.count("reloading: re-executing the master"); n != reloads {
		t.Errorf("%d re-execs logged, want %d", n, reloads)
	}
	total, failed, fresh, freshFailed := 0, 0, 0, 0
	for _, p := range probers {
		name := "new connections"
		switch {
		case p.goClient:
			name = "Go's http.Client"
		case p.keepAlive:
			name = "keep-alive"
		}
		name += " " + p.path
		total += p.tally.n
		f := p.tally.failures()
		if p.keepAlive && p.path == "/metrics" {
			f -= p.tally.kinds["cut-reused"]
		}
		if !p.keepAlive && !p.goClient {
			fresh += p.tally.n
			freshFailed += f
		}
		failed += f
		t.Logf("%s: %s", name, &p.tally)
		if f > 0 {
			t.Errorf("%s: %d probes of %d failed across %d re-execs", name, f, p.tally.n, reloads)
		}
	}
	t.Logf("handovers that cut a connection still open after %v: %d", handoverWait, m.count("connections still open at the re-exec are cut"))
	t.Logf("%d probes in %v across %d re-execs, %d failed; on new connections %d of %d", total, took.Round(time.Millisecond), reloads, failed, freshFailed, fresh)
	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 128+int(syscall.SIGTERM) {
		t.Errorf("master exited %d, want %d (its worker died of the SIGTERM it forwarded)", got, 128+int(syscall.SIGTERM))
	}
}

// acceptWatch reports each connection the server accepts, and closes
// failed once Accept fails (the listener was closed: Serve returns).
type acceptWatch struct {
	*net.TCPListener
	accepted chan struct{}
	failed   chan struct{}
	once     sync.Once
}

func (l *acceptWatch) Accept() (net.Conn, error) {
	c, err := l.TCPListener.Accept()
	if err != nil {
		l.once.Do(func() { close(l.failed) })
		return nil, err
	}
	l.accepted <- struct{}{}
	return c, nil
}

// askOn writes a GET of path on c and reads the answer.
func askOn(t *testing.T, c net.Conn, br *bufio.Reader, path string) (*http.Response, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: mworker\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: no answer: %v", path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, string(b)
}

// closedByServer fails unless the server closes c (EOF) within 5s.
func closedByServer(t *testing.T, c net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if b, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("%s: read %q, %v; want EOF (the server closes it)", what, b, err)
	}
}

// The handover answers the connections the server accepted, whatever
// their state when the re-exec began: one accepted whose request arrives
// only after the idle ones were closed (net/http's Shutdown would close
// it without an answer: the probe lost in a re-exec) is answered, with
// "Connection: close". A keep-alive connection idle at the handover is
// closed; the probes' own connections never stay open after an answer.
// Not parallel: the socket's duplicate is inheritable while handed over.
func TestMetricsHandoverAnswersWhatItAccepted(t *testing.T) {
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &acceptWatch{TCPListener: tl.(*net.TCPListener), accepted: make(chan struct{}, 8), failed: make(chan struct{})}
	s := newMetricsServer(listen.Spec{Network: listen.TCP, Address: tl.Addr().String()}, ln)
	l := &loop{out: newHeldWriter(nil), met: newMetrics(nil, time.Now())}
	s.snap.Store(l.snapshot(&fsm.Status{State: "running", Generation: 1, Workers: []fsm.WorkerStatus{{Generation: 1, Ready: true, Current: true}}}))
	var logs e2etest.SyncBuffer
	s.start(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer s.close()
	connect := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.Dial("tcp", tl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, br := connect()
		select {
		case <-ln.accepted:
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not accept")
		}
		return c, br
	}

	// A probe on a keep-alive connection: closed after the answer.
	probe, pbr := dial()
	if resp, body := askOn(t, probe, pbr, "/readyz"); resp.StatusCode != 200 || !resp.Close {
		t.Errorf("/readyz: %s %q, Close=%v; want 200 and Connection: close", resp.Status, body, resp.Close)
	}
	closedByServer(t, probe, pbr, "the /readyz connection")
	// A scraper's keep-alive connection, idle at the handover.
	idle, ibr := dial()
	if resp, _ := askOn(t, idle, ibr, "/metrics"); resp.StatusCode != 200 || resp.Close {
		t.Fatalf("/metrics: %s, Close=%v; want 200 and keep-alive", resp.Status, resp.Close)
	}
	// Accepted, its request not sent yet.
	early, ebr := dial()

	type result struct {
		env  []string
		undo func()
		err  error
	}
	handed := make(chan result, 1)
	go func() {
		env, undo, err := s.prepareExec()
		handed <- result{env, undo, err}
	}()
	<-ln.failed
	closedByServer(t, idle, ibr, "the idle /metrics connection")
	resp, body := askOn(t, early, ebr, "/readyz")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "ready") || !resp.Close {
		t.Errorf("request on a connection accepted before the handover: %s %q, Close=%v; want 200 ready, Connection: close", resp.Status, body, resp.Close)
	}
	closedByServer(t, early, ebr, "the connection answered during the handover")
	var r result
	select {
	case r = <-handed:
	case <-time.After(10 * time.Second):
		t.Fatal("prepareExec did not return")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.env) != 1 || !strings.HasPrefix(r.env[0], envMetricsFd+"=") {
		t.Errorf("env %q, want %s=FD", r.env, envMetricsFd)
	}
	if strings.Contains(logs.String(), "still open") {
		t.Errorf("the handover cut a connection:\n%s", logs.String())
	}
	// The re-exec did not happen: the same socket serves again.
	r.undo()
	again, abr := connect()
	if resp, body := askOn(t, again, abr, "/readyz"); resp.StatusCode != 200 {
		t.Errorf("/readyz after undo: %s %q, want 200", resp.Status, body)
	}
}
