package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mworker/mworker/internal/e2etest"
)

// metricsClient talks HTTP to a --metrics unix socket, a new connection
// per request, as a Kubernetes probe does.
func metricsClient(sock string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			},
		},
	}
}

func get(c *http.Client, path string) (int, string, error) {
	resp, err := c.Get("http://mworker" + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// scrape reads /metrics and parses it with the Prometheus text parser;
// with promtool installed, `promtool check metrics` must accept it too.
func scrape(t *testing.T, c *http.Client) map[string]*dto.MetricFamily {
	t.Helper()
	code, body, err := get(c, "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v\n%s", code, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v\n%s", err, body)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s\n%s", err, out, body)
		}
	}
	return mfs
}

// value is the value of the sample of family name whose labels include
// every pair of kv; the test fails when there is none.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, kv ...string) float64 {
	t.Helper()
	mf := mfs[name]
	if mf == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range mf.Metric {
		for i := 0; i+1 < len(kv); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || l.GetName() == kv[i] && l.GetValue() == kv[i+1]
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no sample of %s with %v", name, kv)
	return 0
}

// prober polls /readyz until stopped and keeps every answer that is not
// 200.
type prober struct {
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	n      int
	failed []string // answers other than 200
	cut    []string // connections closed without an answer
}

func probe(c *http.Client, path string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			code, body, err := get(c, path)
			p.mu.Lock()
			p.n++
			switch {
			case err != nil:
				p.cut = append(p.cut, err.Error())
			case code != 200:
				p.failed = append(p.failed, fmt.Sprintf("%d %q", code, body))
			}
			p.mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return p
}

func (p *prober) end() (int, []string, []string) {
	close(p.stop)
	<-p.done
	return p.n, p.failed, p.cut
}

// /metrics through reloads and rollbacks, in place and with a re-exec each
// time: mworker_reloads_total{result="success"} moves by exactly 1 per
// reload and {result="failure"} by 1 per rollback, the counters and the
// start time survive re-execs, /readyz answers 200 all along, and turns
// 503 as soon as a soft stop begins, while the workers still drain.
func TestMetricsThroughReloadsAndStop(t *testing.T) {
	t.Parallel()
	for _, reexec := range []string{"never", "always"} {
		t.Run("reexec="+reexec, func(t *testing.T) {
			t.Parallel()
			testMetrics(t, reexec)
		})
	}
}

func testMetrics(t *testing.T, reexec string) {
	began := time.Now()
	// The mode file decides what a new worker does: "exit" fails the
	// generation before --ready 300ms. A worker told to stop drains for
	// a second.
	m := startRun(t, "", `if [ "$(cat "$d/mode" 2>/dev/null)" = exit ]; then exit 3; fi
trap 'sleep 1; echo TERM > "$d/stopped.$$"; exit 0' TERM
`+idle, "-n", "2", "--ready", "300ms", "--ready-timeout", "5s", "--stop-timeout", "10s",
		"--reexec", reexec, "--control", "{dir}/ctl.sock", "--metrics", "unix://{dir}/m.sock")
	sock := filepath.Join(m.dir, "m.sock")
	c := metricsClient(sock)
	e2etest.WaitFor(t, 10*time.Second, "/readyz 200", func() bool {
		code, _, _ := get(c, "/readyz")
		return code == 200
	})
	if code, body, err := get(c, "/healthz"); code != 200 || err != nil {
		t.Errorf("/healthz: %d %q %v, want 200", code, body, err)
	}
	first := scrape(t, c)
	ok0, failed0 := value(t, first, "mworker_reloads_total", "result", "success"), value(t, first, "mworker_reloads_total", "result", "failure")
	start := value(t, first, "mworker_start_time_seconds")
	if s := time.Unix(0, int64(start*1e9)); s.Before(began.Add(-time.Second)) || s.After(time.Now()) {
		t.Errorf("mworker_start_time_seconds %v is not the master's start (between %v and now)", s, began)
	}
	if got := value(t, first, "mworker_workers", "role", "current", "state", "ready"); got != 2 {
		t.Errorf(`mworker_workers{role="current",state="ready"} = %v, want 2`, got)
	}

	setMode := func(mode string) {
		if err := os.WriteFile(filepath.Join(m.dir, "mode"), []byte(mode), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reload := func() int {
		cmd := exec.Command(mworkerBinary(t), "reload", "--control", filepath.Join(m.dir, "ctl.sock"), "--timeout", "20s")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatalf("mworker reload: %v %s", err, out.String())
		}
		return 0
	}

	p := probe(c, "/readyz")
	steps := []struct {
		mode     string
		wantExit int
		ok, fail float64 // the counts after the step, less the first ones
	}{
		{"serve", 0, 1, 0},
		{"exit", 1, 1, 1},
		{"serve", 0, 2, 1},
		{"exit", 1, 2, 2},
	}
	for i, s := range steps {
		setMode(s.mode)
		if got := reload(); got != s.wantExit {
			t.Fatalf("step %d (%s): mworker reload exited %d, want %d", i, s.mode, got, s.wantExit)
		}
		mfs := scrape(t, c)
		ok, fail := value(t, mfs, "mworker_reloads_total", "result", "success")-ok0, value(t, mfs, "mworker_reloads_total", "result", "failure")-failed0
		if ok != s.ok || fail != s.fail {
			t.Errorf("step %d (%s): reloads moved by success %v, failure %v; want %v and %v", i, s.mode, ok, fail, s.ok, s.fail)
		}
		if got := value(t, mfs, "mworker_reload_duration_seconds"); got != float64(i+1) {
			t.Errorf("step %d: mworker_reload_duration_seconds_count = %v, want %d", i, got, i+1)
		}
		if got := value(t, mfs, "mworker_start_time_seconds"); got != start {
			t.Errorf("step %d: mworker_start_time_seconds moved from %v to %v", i, start, got)
		}
	}
	n, failed, cut := p.end()
	if len(failed) > 0 {
		t.Errorf("/readyz answered other than 200 %d times of %d through reloads and rollbacks: %q", len(failed), n, failed[:min(5, len(failed))])
	}
	// A re-exec hands the socket over with its queue, and the old image
	// answers every connection it accepted: none may be closed without an
	// answer, re-exec or not.
	if len(cut) > 0 {
		t.Errorf("/readyz: %d of %d connections closed without an answer: %q", len(cut), n, cut[:min(5, len(cut))])
	}
	t.Logf("/readyz answered 200 %d times through 2 reloads and 2 rollbacks (reexec=%s)", n, reexec)

	// In each rollback, a new worker exited 3 on its own (its sibling
	// may have been stopped first).
	last := scrape(t, c)
	if got := value(t, last, "mworker_worker_exits_total", "reason", "exit_nonzero"); got < 2 {
		t.Errorf(`mworker_worker_exits_total{reason="exit_nonzero"} = %v, want >= 2 (two rollbacks)`, got)
	}

	// A soft stop: 503 at once, while the workers drain for a second.
	setMode("serve")
	m.signal(syscall.SIGUSR1)
	var when string
	e2etest.WaitFor(t, 5*time.Second, "/readyz 503 once the stop began", func() bool {
		code, body, _ := get(c, "/readyz")
		when = fmt.Sprintf("%d workers left", len(m.workers()))
		return code == 503 && strings.Contains(body, "stopping")
	})
	if m.exited() || len(m.workers()) == 0 {
		t.Errorf("/readyz turned 503 only after the workers had gone (%s)", when)
	}
	if code, body, err := get(c, "/healthz"); code != 200 || err != nil {
		t.Errorf("/healthz during the stop: %d %q %v, want 200", code, body, err)
	}
	if got := m.wait(exitTimeout); got != 0 {
		t.Errorf("master exited %d after the soft stop, want 0", got)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("the --metrics socket %s is left behind", sock)
	}
}

// A --metrics address in use is a start failure: one line that names it,
// status 1, and no worker started.
func TestMetricsAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := startRun(t, "", idle, "--metrics", ln.Addr().String())
	if got := m.wait(exitTimeout); got != 1 {
		t.Errorf("master exited %d, want 1", got)
	}
	out := strings.TrimSpace(m.logText())
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, ln.Addr().String()) || !strings.Contains(out, "address already in use") {
		t.Errorf("output %q: want one line naming %s and \"address already in use\"", out, ln.Addr())
	}
	if len(m.spawned()) != 0 {
		t.Errorf("workers %v started although --metrics could not be bound", m.spawned())
	}
}
