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
		s.serveReady(rec, httptest.NewRequest("GET", "/readyz", nil))
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
	m.noteReloads(1*sec, &fsm.Status{State: "running"})
	m.noteReloads(2*sec, &fsm.Status{State: "reloading"})
	m.noteReloads(3*sec, &fsm.Status{State: "reloading"})
	m.noteReloads(5*sec, &fsm.Status{State: "running", Reloads: 1})
	m.noteReloads(6*sec, &fsm.Status{State: "reloading", Reloads: 1})
	m.noteReloads(7*sec, &fsm.Status{State: "exiting", Reloads: 1})
	var n uint64
	for _, c := range m.ReloadCounts {
		n += c
	}
	if n != 1 || m.ReloadSum != 3 {
		t.Errorf("observed %d reloads, %v s; want 1 of 3 s", n, m.ReloadSum)
	}
}
