// Httpworker is an HTTP server written the way servers run under systemd
// are written, with github.com/coreos/go-systemd/v22 and nothing that
// knows about mworker. It runs under "mworker run" unchanged, because
// mworker hands each worker its sockets and a notify socket exactly as
// systemd hands them to a service:
//
//   - activation.ListenersWithNames() reads LISTEN_FDS, LISTEN_PID and
//     LISTEN_FDNAMES and returns the listeners mworker bound (fd 3..) or
//     systemd passed it, by name (--listen NAME=ADDR, FileDescriptorName=);
//   - daemon.SdNotify(false, daemon.SdNotifyReady) sends READY=1 to
//     NOTIFY_SOCKET, which under "--ready notify" is this worker's own
//     socket: mworker counts the worker ready, and a reload goes on;
//   - SIGTERM (mworker's default --stop-signal, and what it forwards on
//     stop) drains: it stops accepting, answers every connection it has
//     accepted, tells keep-alive clients to leave ("Connection: close" on
//     their next answer) and exits 0. (Not with http.Server.Shutdown
//     alone, which can drop a connection accepted just before it, nor by
//     closing idle keep-alive connections at once, which races a client
//     sending its next request on one: see drain.)
//
// Every response is one line naming the process that answered and the
// socket it came through:
//
//	pid=4242 generation=2 slot=0 listener=http
//
// Usage, from the repository root:
//
//	go build -o /tmp/httpworker ./examples/httpworker
//	mworker run -n 2 --listen unix:///tmp/app.sock --ready notify --control /tmp/app.ctl -- /tmp/httpworker
//	curl --unix-socket /tmp/app.sock http://app/
//	mworker reload --control /tmp/app.ctl
//
// Run by systemd itself (socket activation, Type=notify), it behaves the
// same; MWORKER_GENERATION and MWORKER_SLOT are then simply empty.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// drainTimeout bounds the graceful stop. Keep it below mworker's
// --stop-timeout (10s by default), after which mworker sends SIGKILL.
const drainTimeout = 8 * time.Second

// idleGrace is how long a draining server waits for its idle keep-alive
// clients to come back, be answered with "Connection: close" and leave,
// before it closes the connections still idle.
const idleGrace = time.Second

func main() {
	log.SetPrefix(fmt.Sprintf("httpworker[%d]: ", os.Getpid()))
	log.SetFlags(0)
	os.Exit(serve())
}

func serve() int {
	// Subscribe before announcing readiness: a stop that arrives right
	// after READY=1 must drain, not kill.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	byName, err := activation.ListenersWithNames()
	if err != nil {
		log.Printf("cannot take the inherited sockets: %v", err)
		return 1
	}
	var listeners []net.Listener
	for name, ls := range byName {
		for _, l := range ls {
			listeners = append(listeners, namedListener{l, name})
		}
	}
	if len(listeners) == 0 {
		log.Print("no socket passed in LISTEN_FDS: run me under mworker run --listen ADDR, or from a systemd .socket unit")
		return 2
	}

	conns := &connSet{open: make(map[net.Conn]http.ConnState)}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if conns.draining.Load() {
				w.Header().Set("Connection", "close")
			}
			answer(w, r)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState:         conns.track,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, listenerKey{}, c.(namedConn).name)
		},
	}
	served := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { served <- srv.Serve(l) }()
	}

	// The sockets were bound and listening before this process started,
	// so it is ready as soon as it serves them.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Printf("cannot notify readiness: %v", err)
	}

	select {
	case err := <-served:
		log.Printf("serve: %v", err)
		return 1
	case sig := <-stop:
		log.Printf("%v: draining", sig)
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := drain(ctx, srv, listeners, served, conns); err != nil {
		log.Printf("drain: %v", err)
		return 1
	}
	return 0
}

// drain stops serving without dropping a connection, which neither
// http.Server.Shutdown alone nor SetKeepAlivesEnabled(false) guarantees:
// net/http closes without an answer any connection whose request it
// finishes reading after Shutdown has begun (a worker sharing a listening
// socket, under mworker or systemd socket activation, may have accepted
// one a moment before), and both close idle keep-alive connections at
// once, while their clients may be sending the next request on them. So:
// answer from now on with "Connection: close", stop accepting, wait until
// no connection is new or active and until none is open at all or
// idleGrace has passed (a keep-alive client under load comes back within
// it, gets its answer and leaves), and only then Shutdown, which closes
// the connections still idle.
func drain(ctx context.Context, srv *http.Server, listeners []net.Listener, served <-chan error, conns *connSet) error {
	conns.draining.Store(true)
	for _, l := range listeners {
		l.Close()
	}
	// Once every Serve has returned, each connection it accepted is in
	// conns (Serve reports StateNew before it returns).
	for range listeners {
		<-served
	}
	grace := time.Now().Add(idleGrace)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		busy, open := conns.count()
		if busy == 0 && (open == 0 || time.Now().After(grace)) {
			break
		}
		select {
		case <-ctx.Done():
			srv.Close()
			return fmt.Errorf("%d connections still busy after %v, closed: %w", busy, drainTimeout, ctx.Err())
		case <-tick.C:
		}
	}
	return srv.Shutdown(ctx)
}

// connSet holds the state of each connection the server has accepted and
// not yet closed (http.Server.ConnState feeds it), and whether the server
// is draining.
type connSet struct {
	mu       sync.Mutex
	open     map[net.Conn]http.ConnState
	draining atomic.Bool
}

func (s *connSet) track(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case http.StateClosed, http.StateHijacked:
		delete(s.open, c)
	default:
		s.open[c] = state
	}
}

// count returns how many connections are new (accepted, no request read
// yet) or active (a request in progress), and how many are open at all.
func (s *connSet) count() (busy, open int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.open {
		if st == http.StateNew || st == http.StateActive {
			busy++
		}
	}
	return busy, len(s.open)
}

// answer tells the client which process served it, through which socket.
func answer(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "pid=%d generation=%s slot=%s listener=%s\n",
		os.Getpid(), os.Getenv("MWORKER_GENERATION"), os.Getenv("MWORKER_SLOT"), r.Context().Value(listenerKey{}))
}

// listenerKey is the context key of the name of the socket a request came
// through.
type listenerKey struct{}

// namedListener is an inherited listener with its LISTEN_FDNAMES name,
// which it gives to every connection it accepts.
type namedListener struct {
	net.Listener
	name string
}

func (l namedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return namedConn{c, l.name}, nil
}

type namedConn struct {
	net.Conn
	name string
}
