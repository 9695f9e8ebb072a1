package osadapter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/listen"
)

// The --metrics endpoint (docs/guide.md, "Metrics and health").
//
// The loop counts what only the adapter sees (a worker's exit and how it
// ended, the spawns of a restart, the time a reload takes) in metrics,
// which always exists and is handed to the next image in execState. With
// --metrics, it also publishes a snapshot after each event it handles
// (publish): an immutable value behind an atomic pointer that the HTTP
// handlers of /metrics and /readyz read on their own goroutines, so that a
// scrape never waits for the loop and the loop never waits for a scrape.
// /healthz is the one exception: the handler asks the loop itself, through
// a channel it selects on, and answers 503 when the loop does not answer
// within healthWait.

// envMetricsFd names the descriptor of the --metrics socket handed to the
// next image: its listen queue is kept, so a scrape that arrives during a
// re-exec is answered by the next image.
const envMetricsFd = "MWORKER_METRICS_FD"

// healthWait bounds how long /healthz waits for the loop: under the 1s
// timeoutSeconds Kubernetes gives a probe by default.
const healthWait = 500 * time.Millisecond

// reloadBuckets are the upper bounds (seconds) of
// mworker_reload_duration_seconds: from a reload with --ready immediate
// (milliseconds) to one that waits for --ready-timeout (30s by default).
var reloadBuckets = []float64{0.1, 0.25, 0.5, 1, 1.5, 2, 5, 10, 30, 60, 120}

// The reasons of mworker_worker_exits_total.
const (
	exitZero = iota
	exitNonzero
	exitSignal
	numExitReasons
)

var exitReasons = [numExitReasons]string{"exit_zero", "exit_nonzero", "signal"}

// metricsState is what the counters are; it survives re-execs.
type metricsState struct {
	// StartTime is the wall-clock start of the first image (Unix ns).
	StartTime int64
	// ReloadStart is the CLOCK_MONOTONIC time (ns) at which the reload
	// under way began, or 0.
	ReloadStart int64
	// ReloadCounts are the reloads observed per bucket of reloadBuckets,
	// not cumulative; the last one is +Inf. ReloadSum is their seconds.
	ReloadCounts []uint64
	ReloadSum    float64
	// Restarts counts the workers started again in the slot of a worker
	// of the serving generation that exited (the spawns of a restart
	// timer, fsm.TimerRestart), failed spawns included.
	Restarts uint64
	// Exits counts the workers reaped, by exitReasons.
	Exits [numExitReasons]uint64
}

// metrics is the loop's: the counters, and the server of --metrics, if any.
type metrics struct {
	metricsState
	// lastOK and lastFailed are the machine's reload counts at the last
	// publish: when they move, a reload has had its outcome.
	lastOK, lastFailed int
	srv                *metricsServer
}

func newMetrics(resumed *execState, now time.Time) *metrics {
	m := &metrics{}
	if resumed != nil {
		m.metricsState = resumed.Metrics
	}
	if m.StartTime == 0 {
		m.StartTime = now.UnixNano()
	}
	if len(m.ReloadCounts) != len(reloadBuckets)+1 {
		// A first start, or an image with other buckets: the histogram
		// starts again.
		m.ReloadCounts, m.ReloadSum = make([]uint64, len(reloadBuckets)+1), 0
	}
	return m
}

// noteExit counts a worker's exit.
func (m *metrics) noteExit(st fsm.ExitStatus) {
	switch {
	case st.Signal != 0:
		m.Exits[exitSignal]++
	case st.Code == 0:
		m.Exits[exitZero]++
	default:
		m.Exits[exitNonzero]++
	}
}

// noteReloads times reloads from the machine's status: a reload begins
// when the state becomes "reloading", and ends with an outcome when the
// count of reloads or failed reloads moves. One that ends without an
// outcome (a stop began) is not observed.
func (m *metrics) noteReloads(now int64, state string, ok, failed int) {
	if ok != m.lastOK || failed != m.lastFailed {
		if m.ReloadStart != 0 {
			m.observe(time.Duration(now - m.ReloadStart).Seconds())
		}
		m.ReloadStart = 0
		m.lastOK, m.lastFailed = ok, failed
	}
	switch {
	case state == "reloading" && m.ReloadStart == 0:
		m.ReloadStart = now
	case state != "reloading":
		m.ReloadStart = 0
	}
}

func (m *metrics) observe(seconds float64) {
	i := 0
	for i < len(reloadBuckets) && seconds > reloadBuckets[i] {
		i++
	}
	m.ReloadCounts[i]++
	m.ReloadSum += seconds
}

// Roles and states of mworker_workers.
const (
	roleCurrent = iota
	roleNew
	roleOld
	numRoles
)

const (
	stateReady = iota
	stateStarting
	stateStopping
	numStates
)

var (
	roleNames  = [numRoles]string{"current", "new", "old"}
	stateNames = [numStates]string{"ready", "starting", "stopping"}
)

// metricsSnapshot is what a scrape or a readiness probe reads: built by
// the loop, never changed once published.
type metricsSnapshot struct {
	metricsState
	reloadsOK, reloadsFailed int
	generation, desired      int
	state                    string
	workers                  [numRoles][numStates]int
	logDropped               int64
	// ready is /readyz's answer: no stop has begun and a worker that is
	// not stopping is ready.
	ready bool
	// delaying: a stop waits out --shutdown-delay (not ready).
	delaying bool
}

func (l *loop) snapshot(st *fsm.Status) *metricsSnapshot {
	s := &metricsSnapshot{
		metricsState:  l.met.metricsState,
		reloadsOK:     st.Reloads,
		reloadsFailed: st.FailedReloads,
		generation:    st.Generation,
		desired:       st.Size,
		state:         st.State,
		delaying:      st.ShutdownDelay,
		logDropped:    l.out.q.droppedLines(),
	}
	s.ReloadCounts = append([]uint64(nil), l.met.ReloadCounts...)
	ready := 0
	for _, w := range st.Workers {
		// A worker restart SLOT or a rolling reload moved into the serving
		// generation keeps its own, newer, number: Current says it serves.
		role := roleOld
		switch {
		case w.Current:
			role = roleCurrent
		case w.Generation > st.Generation && !w.Stopping:
			role = roleNew
		}
		state := stateStarting
		switch {
		case w.Stopping:
			state = stateStopping
		case w.Ready:
			state = stateReady
			ready++
		}
		s.workers[role][state]++
	}
	s.ready = ready > 0 && (st.State == "running" || st.State == "reloading") && !st.ShutdownDelay
	return s
}

// publish times reloads and, with --metrics, marks the handlers' snapshot
// stale. The loop calls it after each event it handles: it must stay
// cheap (a snapshot walks every worker), so the snapshot itself is built
// when a handler asks for it (freshen), between two events.
func (l *loop) publish() {
	if l.met.srv == nil || l.done() {
		return
	}
	ok, failed := l.m.Reloads()
	l.met.noteReloads(l.sys.Now(), l.m.State(), ok, failed)
	l.met.srv.stale.Store(true)
}

// freshen builds the handlers' snapshot now, for a handler that found it
// stale; done has room for the answer.
func (l *loop) freshen(done chan<- struct{}) {
	if l.met.srv != nil && !l.done() {
		l.met.srv.stale.Store(false)
		l.met.srv.snap.Store(l.snapshot(l.m.Status()))
	}
	done <- struct{}{}
}

// healthAnswer is the loop's answer to /healthz.
type healthAnswer struct {
	state      string
	generation int
}

// answerHealth answers a /healthz request; c has room for the answer.
func (l *loop) answerHealth(c chan<- healthAnswer) {
	c <- healthAnswer{state: l.m.State(), generation: l.m.Status().Generation}
}

// metricsServer serves --metrics.
type metricsServer struct {
	spec   listen.Spec // the address, for logs and the unix socket's removal
	ln     net.Listener
	srv    *http.Server
	log    *slog.Logger
	snap   atomic.Pointer[metricsSnapshot]
	health chan chan<- healthAnswer
	// stale: events were handled since snap was built; fresh carries a
	// handler's request for a new one to the loop.
	stale atomic.Bool
	fresh chan chan<- struct{}
	// served is closed when the current Serve returns; execing when a
	// re-exec begins, so that a /healthz waiting for the loop, which is
	// busy with it, answers at once.
	served, execing chan struct{}
	// conns counts the connections the current server accepted and has
	// not closed yet (its ConnState hook): a re-exec waits for them.
	conns *sync.WaitGroup
}

// openMetrics binds --metrics (spec as the command line checked it), or
// takes over the socket the previous image handed over. It runs before
// anything starts: a failure is the master's start failure.
func openMetrics(spec string) (*metricsServer, error) {
	if spec == "" {
		return nil, nil
	}
	s, err := listen.ParseSpec(spec)
	if err != nil {
		return nil, errorf("bad --metrics %q: %w", spec, err)
	}
	if v, ok := os.LookupEnv(envMetricsFd); ok {
		os.Unsetenv(envMetricsFd)
		if ln, err := adoptMetrics(v); err == nil {
			return newMetricsServer(s, ln), nil
		}
		// Bind afresh: the previous image's socket is not usable.
	}
	ls, err := listen.Bind([]listen.Spec{s})
	if err != nil {
		return nil, fmt.Errorf("cannot serve --metrics: %w", trimListen(err))
	}
	ln, err := net.FileListener(ls[0].File)
	ls[0].File.Close()
	if err != nil {
		return nil, fmt.Errorf("cannot serve --metrics on %s: %w", s.URL(), err)
	}
	return newMetricsServer(s, ln), nil
}

func trimListen(err error) error {
	msg := err.Error()
	if len(msg) > len("listen: ") && msg[:len("listen: ")] == "listen: " {
		return errors.New(msg[len("listen: "):])
	}
	return err
}

func adoptMetrics(v string) (net.Listener, error) {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, errorf("bad %s %q", envMetricsFd, v)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, errorf("%s %d is not open: %w", envMetricsFd, fd, err)
	}
	f := os.NewFile(uintptr(fd), "metrics")
	defer f.Close()
	return net.FileListener(f)
}

func newMetricsServer(spec listen.Spec, ln net.Listener) *metricsServer {
	return &metricsServer{spec: spec, ln: ln, health: make(chan chan<- healthAnswer), fresh: make(chan chan<- struct{})}
}

// start serves on a goroutine of its own; its errors are logged at debug
// level through the master's logger, never as raw lines on stderr.
func (s *metricsServer) start(log *slog.Logger) {
	s.log = log
	if s.ln == nil {
		return
	}
	s.served, s.execing = make(chan struct{}), make(chan struct{})
	execing := s.execing
	conns := new(sync.WaitGroup)
	s.conns = conns
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) { s.serveMetrics(w, r, execing) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { s.serveHealth(w, r, execing) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { s.serveReady(w, r, execing) })
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		// Serve reports StateNew before it returns: once it has returned,
		// every connection it accepted is counted.
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	go func(ln net.Listener, done chan struct{}) {
		defer close(done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("metrics: the server stopped", "address", s.spec.URL(), "err", err.Error())
		}
	}(s.ln, s.served)
}

// handoverWait bounds how long a re-exec waits for the connections the
// server accepted to be answered; the requests take microseconds, but a
// connection's goroutine may not have run yet on a loaded machine.
const handoverWait = 200 * time.Millisecond

// prepareExec hands the socket to the next image: the server stops
// accepting (a duplicate keeps the socket and its queue), answers the
// connections it accepted and closes its idle ones, and the duplicate
// stays open across execve. undo serves again.
//
// Not http.Server.Shutdown: a connection it accepted whose request it
// has not read yet (StateNew: its goroutine had not run, or the request
// was still on its way) is closed without an answer once Shutdown has
// begun (net/http's conn.serve returns when it finds the server shutting
// down after reading a request), and that was the probe in a few hundred
// lost during a re-exec. Instead keep-alives end, which closes the idle
// connections and makes every answer from now on "Connection: close", and
// the server waits for the connections it accepted to close after their
// answer.
func (s *metricsServer) prepareExec() (env []string, undo func(), err error) {
	f, err := dupListener(s.ln)
	if err != nil {
		return nil, nil, errorf("keep the --metrics socket across the re-exec: %w", err)
	}
	if s.served == nil {
		// Not serving yet (a re-exec within Start): only the socket.
		s.ln.Close()
	} else {
		close(s.execing)
		s.srv.SetKeepAlivesEnabled(false)
		s.ln.Close()
		<-s.served
		drained := make(chan struct{})
		go func(conns *sync.WaitGroup) {
			conns.Wait()
			close(drained)
		}(s.conns)
		t := time.NewTimer(handoverWait)
		select {
		case <-drained:
		case <-t.C:
			s.log.Debug("metrics: connections still open at the re-exec are cut", "wait", handoverWait.String())
		}
		t.Stop()
		// What is left (a client that connected and sent nothing) is
		// closed, as execve would; this also ends the waiting goroutine.
		s.srv.Close()
	}
	resume := func() {
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			s.log.Error("metrics: cannot serve again after the re-exec did not happen", "address", s.spec.URL(), "err", err.Error())
			s.ln = nil
			return
		}
		s.ln = ln
		s.start(s.log)
	}
	if err := listen.KeepOnExec([]*os.File{f}); err != nil {
		resume()
		return nil, nil, errorf("keep the --metrics socket across the re-exec: %w", err)
	}
	return []string{envMetricsFd + "=" + strconv.Itoa(int(f.Fd()))}, func() {
		_ = listen.CloseOnExec([]*os.File{f})
		resume()
	}, nil
}

// close ends the server at the master's exit, and removes a unix socket's
// file.
func (s *metricsServer) close() {
	if s.srv != nil {
		s.srv.Close()
	} else if s.ln != nil {
		s.ln.Close()
	}
	if s.spec.Network == listen.Unix {
		os.Remove(s.spec.Address)
	}
}

// current is the snapshot to answer with: the published one, or, if events
// were handled since, one the loop builds now. A loop that does not answer
// within healthWait (busy with a re-exec, or stuck) leaves the last one.
func (s *metricsServer) current(r *http.Request, execing <-chan struct{}) *metricsSnapshot {
	if s.fresh == nil || !s.stale.Load() {
		return s.snap.Load()
	}
	c := make(chan struct{}, 1)
	t := time.NewTimer(healthWait)
	defer t.Stop()
	select {
	case s.fresh <- c:
		select {
		case <-c:
		case <-t.C:
		case <-r.Context().Done():
		}
	case <-execing:
	case <-t.C:
	case <-r.Context().Done():
	}
	return s.snap.Load()
}

// A probe's connection is closed after its answer ("Connection: close"),
// as the kubelet asks anyway: a prober that would keep it open for the
// next probe, seconds later, gains nothing, and would lose that probe if
// it crossed the server closing the idle connection at a re-exec.
func probeHeaders(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Connection", "close")
}

func (s *metricsServer) serveReady(w http.ResponseWriter, r *http.Request, execing <-chan struct{}) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	probeHeaders(w)
	snap := s.current(r, execing)
	switch {
	case snap == nil:
		http.Error(w, "not ready: starting", http.StatusServiceUnavailable)
	case snap.state == "exiting" || snap.state == "exited":
		http.Error(w, "not ready: stopping", http.StatusServiceUnavailable)
	case snap.delaying:
		http.Error(w, "not ready: stopping after the shutdown delay", http.StatusServiceUnavailable)
	case !snap.ready:
		http.Error(w, "not ready: no worker is ready", http.StatusServiceUnavailable)
	default:
		n := 0
		for r := range numRoles {
			n += snap.workers[r][stateReady]
		}
		fmt.Fprintf(w, "ready: generation %d, %d ready workers\n", snap.generation, n)
	}
}

func (s *metricsServer) serveHealth(w http.ResponseWriter, r *http.Request, execing <-chan struct{}) {
	probeHeaders(w)
	c := make(chan healthAnswer, 1)
	t := time.NewTimer(healthWait)
	defer t.Stop()
	late := func() {
		http.Error(w, "unhealthy: the master's event loop did not answer within "+healthWait.String(), http.StatusServiceUnavailable)
	}
	select {
	case s.health <- c:
	case <-execing:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok: re-executing")
		return
	case <-t.C:
		late()
		return
	case <-r.Context().Done():
		return
	}
	select {
	case a := <-c:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "ok: %s, generation %d\n", a.state, a.generation)
	case <-t.C:
		late()
	case <-r.Context().Done():
	}
}

func dupListener(ln net.Listener) (*os.File, error) {
	c, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("a %T has no descriptor", ln)
	}
	return listen.Dup(c)
}

// useMetrics gives the loop the server of --metrics, if any, and its first
// snapshot, so that a probe never sees an empty one once it can connect.
func (l *loop) useMetrics(ms *metricsServer) {
	if ms == nil {
		return
	}
	l.met.srv = ms
	ms.log = l.log
	l.health = ms.health
	l.fresh = ms.fresh
	l.logf(slog.LevelInfo, "metrics: serving /metrics, /healthz and /readyz", "address", ms.url())
}

// serveMetrics starts the server once Start has given the machine its
// workers (after a re-exec, those it adopted): until then, a scrape or a
// probe waits in the socket's queue rather than see an empty pool.
func (l *loop) serveMetrics() {
	if s := l.met.srv; s != nil && s.served == nil && !l.done() {
		l.publish()
		l.freshen(make(chan struct{}, 1))
		s.start(l.log)
	}
}

// url is where the server listens, with the port the kernel chose for :0.
func (s *metricsServer) url() string {
	if s.spec.Network == listen.Unix {
		return s.spec.URL()
	}
	return "http://" + s.ln.Addr().String()
}
