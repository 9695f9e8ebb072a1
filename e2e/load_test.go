package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// worker names the demo worker that answered: its generation and pid.
type worker struct{ generation, pid int }

// load is a load generator of fresh connections: each of its clients
// opens a connection to a unix socket, sends one GET, reads the answer
// and closes, again and again, until it is stopped or reaches its
// request or time bound.
type load struct {
	client   *http.Client
	stopping chan struct{}
	wg       sync.WaitGroup
	max      int
	deadline time.Time

	mu       sync.Mutex
	ok       int
	failed   int
	failures []string // the first few, for the test's message
	by       map[worker]int
	bounded  bool // a client stopped on the request or time bound
}

// startLoad starts clients goroutines against the HTTP server on the unix
// socket sock; together they send at most max requests and stop after d.
func startLoad(sock string, clients, max int, d time.Duration) *load {
	l := &load{
		client:   unixClient(sock),
		stopping: make(chan struct{}),
		max:      max,
		deadline: time.Now().Add(d),
		by:       make(map[worker]int),
	}
	for range clients {
		l.wg.Add(1)
		go l.run()
	}
	return l
}

func (l *load) run() {
	defer l.wg.Done()
	for {
		select {
		case <-l.stopping:
			return
		default:
		}
		l.mu.Lock()
		if l.ok+l.failed >= l.max || time.Now().After(l.deadline) {
			l.bounded = true
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		w, err := get(l.client)
		l.mu.Lock()
		if err != nil {
			l.failed++
			if len(l.failures) < 5 {
				l.failures = append(l.failures, err.Error())
			}
		} else {
			l.ok++
			l.by[w]++
		}
		l.mu.Unlock()
	}
}

// unixClient is an HTTP client of the unix socket sock that opens a fresh
// connection for every request.
func unixClient(sock string) *http.Client {
	var dialer net.Dialer
	return &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", sock)
			},
			DisableKeepAlives: true,
		},
		Timeout: 10 * time.Second,
	}
}

// get sends one request and parses the demo worker's line,
// "generation=G slot=S pid=P".
func get(c *http.Client) (worker, error) {
	var w worker
	resp, err := c.Get("http://mworker/")
	if err != nil {
		return w, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return w, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return w, fmt.Errorf("status %s: %q", resp.Status, body)
	}
	var slot int
	if _, err := fmt.Sscanf(string(body), "generation=%d slot=%d pid=%d\n", &w.generation, &slot, &w.pid); err != nil {
		return w, fmt.Errorf("unexpected body %q: %v", body, err)
	}
	return w, nil
}

// answered is how many requests have been answered so far, failed or not.
func (l *load) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok + l.failed
}

// loadResult is what a load saw.
type loadResult struct {
	ok, failed int
	failures   []string
	by         map[worker]int
	bounded    bool // it ran out of requests or time before it was stopped
}

// generations lists the generations that answered, sorted.
func (r loadResult) generations() []int {
	seen := map[int]bool{}
	for w := range r.by {
		seen[w.generation] = true
	}
	var gens []int
	for g := range seen {
		gens = append(gens, g)
	}
	sort.Ints(gens)
	return gens
}

func (r loadResult) String() string {
	var ws []string
	for w, n := range r.by {
		ws = append(ws, fmt.Sprintf("gen %d pid %d: %d", w.generation, w.pid, n))
	}
	sort.Strings(ws)
	return fmt.Sprintf("%d answered, %d failed %q; by worker: %s", r.ok, r.failed, r.failures, strings.Join(ws, ", "))
}

// stop stops the clients, waits for their last requests and returns what
// they saw.
func (l *load) stop() loadResult {
	close(l.stopping)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return loadResult{ok: l.ok, failed: l.failed, failures: l.failures, by: l.by, bounded: l.bounded}
}
