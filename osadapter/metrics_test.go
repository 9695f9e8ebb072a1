package osadapter

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

// A loop that does not take the request (frozen in an event) fails
// /healthz with 503 after healthWait; one that answers passes it.
func TestHealthzAnsweredByTheLoop(t *testing.T) {
	s := &metricsServer{health: make(chan chan<- healthAnswer)}
	execing := make(chan struct{})

	began := time.Now()
	rec := httptest.NewRecorder()
	s.serveHealth(rec, httptest.NewRequest("GET", "/healthz", nil), execing)
	if rec.Code != http.StatusServiceUnavailable || time.Since(began) < healthWait {
		t.Errorf("frozen loop: %d after %v, want 503 after %v", rec.Code, time.Since(began), healthWait)
	}

	go func() { (<-s.health) <- healthAnswer{state: "running", generation: 3} }()
	rec = httptest.NewRecorder()
	s.serveHealth(rec, httptest.NewRequest("GET", "/healthz", nil), execing)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "running, generation 3") {
		t.Errorf("answering loop: %d %q, want 200 naming the state", rec.Code, rec.Body.String())
	}
}

// /readyz from the snapshot: ready workers that are not stopping count,
// and a stop turns it 503 while workers are still there.
func TestReadyzFromSnapshot(t *testing.T) {
	l := &loop{out: newHeldWriter(nil), met: newMetrics(nil, time.Now())}
	w := func(gen int, ready, stopping bool) fsm.WorkerStatus {
		return fsm.WorkerStatus{Generation: gen, Ready: ready, Stopping: stopping}
	}
	for _, tc := range []struct {
		what string
		st   fsm.Status
		want int
	}{
		{"serving", fsm.Status{State: "running", Generation: 2, Workers: []fsm.WorkerStatus{w(2, true, false), w(2, false, false)}}, 200},
		{"reload under way", fsm.Status{State: "reloading", Generation: 2, Workers: []fsm.WorkerStatus{w(2, true, false), w(3, false, false)}}, 200},
		{"rollback: the failed generation stopping", fsm.Status{State: "running", Generation: 2, Workers: []fsm.WorkerStatus{w(2, true, false), w(3, true, true)}}, 200},
		{"only stopping workers ready", fsm.Status{State: "running", Generation: 2, Workers: []fsm.WorkerStatus{w(1, true, true), w(2, false, false)}}, 503},
		{"empty slots", fsm.Status{State: "running", Generation: 2}, 503},
		{"stop begun", fsm.Status{State: "exiting", Generation: 2, Workers: []fsm.WorkerStatus{w(2, true, false)}}, 503},
	} {
		s := &metricsServer{}
		s.snap.Store(l.snapshot(&tc.st))
		rec := httptest.NewRecorder()
		s.serveReady(rec, httptest.NewRequest("GET", "/readyz", nil), nil)
		if rec.Code != tc.want {
			t.Errorf("%s: /readyz %d %q, want %d", tc.what, rec.Code, rec.Body.String(), tc.want)
		}
	}
}

// Reload durations: observed when the reload counts move, started when
// the state becomes reloading; a reload cut short by a stop is not.
func TestReloadTiming(t *testing.T) {
	m := newMetrics(nil, time.Now())
	sec := int64(time.Second)
	m.noteReloads(1*sec, "running", 0, 0)
	m.noteReloads(2*sec, "reloading", 0, 0)
	m.noteReloads(3*sec, "reloading", 0, 0)
	m.noteReloads(5*sec, "running", 1, 0)
	m.noteReloads(6*sec, "reloading", 1, 0)
	m.noteReloads(7*sec, "exiting", 1, 0)
	var n uint64
	for _, c := range m.ReloadCounts {
		n += c
	}
	if n != 1 || m.ReloadSum != 3 {
		t.Errorf("observed %d reloads, %v s; want 1 of 3 s", n, m.ReloadSum)
	}
}

// mworker_workers{role}: a worker that serves in the current generation's
// slots under a newer number of its own (restart SLOT, a kept batch of a
// rolling reload) is current, not new; one of a newer generation still
// starting is new; a stopping one is old.
func TestWorkerRolesFromCurrent(t *testing.T) {
	l := &loop{out: newHeldWriter(nil), met: newMetrics(nil, time.Now())}
	snap := l.snapshot(&fsm.Status{State: "running", Generation: 2, Workers: []fsm.WorkerStatus{
		{Generation: 2, Current: true, Ready: true},
		{Generation: 5, Current: true, Ready: true}, // moved in by restart SLOT
		{Generation: 6}, // a new generation starting
		{Generation: 5, Stopping: true, Ready: true},
	}})
	if got := snap.workers[roleCurrent][stateReady]; got != 2 {
		t.Errorf("current ready workers: %d, want 2 (one under its own newer number)", got)
	}
	if got := snap.workers[roleNew][stateStarting]; got != 1 {
		t.Errorf("new starting workers: %d, want 1", got)
	}
	if got := snap.workers[roleOld][stateStopping]; got != 1 {
		t.Errorf("old stopping workers: %d, want 1", got)
	}
}

// A handler that finds the snapshot stale asks the loop for a fresh one
// (the loop builds it between events), and keeps the last one when the
// loop does not answer in time.
func TestMetricsSnapshotFreshenedByTheLoop(t *testing.T) {
	s := &metricsServer{fresh: make(chan chan<- struct{})}
	old := &metricsSnapshot{generation: 1}
	s.snap.Store(old)
	s.stale.Store(true)
	go func() {
		c := <-s.fresh
		s.snap.Store(&metricsSnapshot{generation: 2})
		s.stale.Store(false)
		c <- struct{}{}
	}()
	if got := s.current(httptest.NewRequest("GET", "/metrics", nil), nil); got.generation != 2 {
		t.Errorf("stale snapshot: got generation %d, want the loop's fresh one (2)", got.generation)
	}
	// Not stale: no request to the loop (nothing reads s.fresh now).
	if got := s.current(httptest.NewRequest("GET", "/metrics", nil), nil); got.generation != 2 {
		t.Errorf("fresh snapshot: got generation %d, want 2", got.generation)
	}
	// Stale and a loop that does not answer: the last one, after healthWait.
	s.stale.Store(true)
	began := time.Now()
	if got := s.current(httptest.NewRequest("GET", "/metrics", nil), nil); got.generation != 2 || time.Since(began) < healthWait {
		t.Errorf("frozen loop: generation %d after %v, want the last one (2) after %v", got.generation, time.Since(began), healthWait)
	}
}
