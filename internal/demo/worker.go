package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mworker/mworker/internal/listen"
	"github.com/mworker/mworker/internal/sdnotify"
)

// maxSleep bounds the ?sleep= knob.
const maxSleep = time.Minute

// drainSignals make the worker drain: any of them may be mworker's
// --stop-signal, and SIGTERM/SIGINT are what a stop forwards.
var drainSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR1}

// Worker is `mworker demo-worker`, the demo's HTTP worker. It serves on
// the listeners passed as systemd does (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES), sends READY=1 to NOTIFY_SOCKET when that is set, and
// answers every request with one line:
//
//	generation=G slot=S pid=P
//
// from MWORKER_GENERATION, MWORKER_SLOT and its pid. GET /?sleep=D (a Go
// duration up to a minute) sends the header at once and the line after D,
// for tests and benchmarks of draining. On a stop signal it drains:
// it stops accepting, lets in-flight requests finish, closes idle
// keep-alive connections, and exits 0. A second stop signal cuts the
// remaining connections and exits 1.
func Worker(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "mworker demo-worker: unexpected argument %q: it takes none; mworker demo starts it\n", args[0])
		return 2
	}
	// Ask for the signals before READY=1, so a stop that follows it drains.
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, drainSignals...)
	defer signal.Stop(stop)

	lns, err := activated()
	if err != nil {
		fmt.Fprintf(stderr, "mworker demo-worker: %v\n", err)
		return 1
	}
	pid := os.Getpid()
	gen, slot := os.Getenv("MWORKER_GENERATION"), os.Getenv("MWORKER_SLOT")
	prefix := fmt.Sprintf("demo-worker pid=%d generation=%s slot=%s: ", pid, gen, slot)
	busy := &connSet{conns: make(map[net.Conn]http.ConnState)}
	srv := &http.Server{
		ConnState:         busy.track,
		Handler:           handler{draining: &busy.draining, line: fmt.Sprintf("generation=%s slot=%s pid=%d\n", gen, slot, pid)},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          log.New(stderr, prefix, 0),
	}
	served := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { served <- srv.Serve(ln) }()
	}
	if err := notifyReady(); err != nil {
		fmt.Fprintf(stderr, "%scannot send READY=1: %v\n", prefix, err)
		srv.Close()
		return 1
	}

	select {
	case err := <-served:
		fmt.Fprintf(stderr, "%sserving stopped: %v\n", prefix, err)
		srv.Close()
		return 1
	case sig := <-stop:
		fmt.Fprintf(stderr, "%s%v: draining\n", prefix, sig)
	}
	drained := make(chan error, 1)
	go func() { drained <- drain(srv, lns, served, busy) }()
	select {
	case err := <-drained:
		if err != nil {
			fmt.Fprintf(stderr, "%sdrain: %v\n", prefix, err)
			return 1
		}
		return 0
	case sig := <-stop:
		fmt.Fprintf(stderr, "%s%v again: closing the connections still open without draining\n", prefix, sig)
		srv.Close()
		return 1
	}
}

// notifyReady sends READY=1 to NOTIFY_SOCKET, with STATUS=serving (which
// mworker status shows beside the worker). The send does not block, and
// a worker that is never ready is stopped: a full queue (the master not
// reading for a moment) is retried for up to 5 s rather than lost.
func notifyReady() error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := sdnotify.Notify("READY=1\nSTATUS=serving")
		if !errors.Is(err, sdnotify.ErrQueueFull) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// drain stops serving without dropping a request. http.Server.Shutdown
// alone is not enough: a connection that waited in the shared accept queue,
// or that Serve accepted but has not read yet, is closed without an answer
// once Shutdown has begun (net/http drops a request read after that). So:
// stop accepting (close the listeners and let every Serve return, having
// tracked what it accepted); answer every request from now on with
// "Connection: close", so that a keep-alive client leaves after its next
// answer instead of racing a close; wait until no connection is new or
// active, and until none is open at all or a one-second grace has passed;
// only then Shutdown, which closes the connections still idle.
func drain(srv *http.Server, lns []net.Listener, served <-chan error, busy *connSet) error {
	for _, ln := range lns {
		ln.Close()
	}
	for range lns {
		<-served
	}
	busy.draining.Store(true) // every answer from now on says Connection: close
	grace := time.Now().Add(time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		b, all := busy.count()
		if b == 0 && (all == 0 || time.Now().After(grace)) {
			break
		}
		<-tick.C
	}
	return srv.Shutdown(context.Background())
}

// connSet counts the connections that are new (accepted, request not read
// yet) or active (a request in progress); http.Server.ConnState feeds it.
type connSet struct {
	mu       sync.Mutex
	conns    map[net.Conn]http.ConnState
	draining atomic.Bool
}

func (s *connSet) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateClosed || st == http.StateHijacked {
		delete(s.conns, c)
	} else {
		s.conns[c] = st
	}
}

// count returns how many connections are new or active, and how many are
// open at all.
func (s *connSet) count() (busy, all int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.conns {
		if st == http.StateNew || st == http.StateActive {
			busy++
		}
	}
	return busy, len(s.conns)
}

// activated takes over the listeners passed as systemd passes them.
func activated() ([]net.Listener, error) {
	fds, pid := os.Getenv(listen.EnvListenFDs), os.Getenv(listen.EnvListenPID)
	ls, err := listen.Activated()
	if err != nil {
		return nil, err
	}
	if len(ls) == 0 {
		if fds == "" {
			return nil, errors.New("no listener: LISTEN_FDS is not set; run it under mworker run --listen ADDR (as mworker demo does)")
		}
		return nil, fmt.Errorf("no listener: LISTEN_FDS=%s is for pid %s, not this process (%d)", fds, pid, os.Getpid())
	}
	nls := make([]net.Listener, 0, len(ls))
	for _, l := range ls {
		nl, err := net.FileListener(l.File) // a dup; Go's poller makes it non-blocking
		l.File.Close()
		if err != nil {
			for _, nl := range nls {
				nl.Close()
			}
			return nil, fmt.Errorf("listener %q (%s): %w", l.Name, l.Address, err)
		}
		nls = append(nls, nl)
	}
	return nls, nil
}

type handler struct {
	line     string
	draining *atomic.Bool
}

func (h handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.draining != nil && h.draining.Load() {
		w.Header().Set("Connection", "close")
	}
	if s := r.URL.Query().Get("sleep"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxSleep {
			http.Error(w, "bad sleep "+strconv.Quote(s)+": use a duration up to "+maxSleep.String()+", e.g. 200ms", http.StatusBadRequest)
			return
		}
		// The header goes out first: a client then knows its request is
		// in flight, which is what drain tests need to know.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	io.WriteString(w, h.line)
}
