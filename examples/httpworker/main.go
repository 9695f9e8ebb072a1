// Httpworker is an HTTP server written the way servers run under systemd
// are written, with github.com/coreos/go-systemd/v22 and nothing that
// knows about mworker. It runs under "mworker run" unchanged, because
// mworker hands each worker its sockets and a notify socket exactly as
// systemd hands them to a service:
//
//   - activation.Listeners() reads LISTEN_FDS, LISTEN_PID and
//     LISTEN_FDNAMES and returns the listeners mworker bound (fd 3..);
//   - daemon.SdNotify(false, daemon.SdNotifyReady) sends READY=1 to
//     NOTIFY_SOCKET, which under "--ready notify" is this worker's own
//     socket: mworker counts the worker ready, and a reload goes on;
//   - SIGTERM (mworker's default --stop-signal, and what it forwards on
//     stop) drains: it stops accepting, finishes the requests in flight
//     and exits 0.
//
// Every response is one line naming the process that answered:
//
//	pid=4242 generation=2 slot=0
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
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
)

// drainTimeout bounds the graceful stop. Keep it below mworker's
// --stop-timeout (10s by default), after which mworker sends SIGKILL.
const drainTimeout = 8 * time.Second

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

	listeners, err := activation.Listeners()
	if err != nil {
		log.Printf("cannot take the inherited sockets: %v", err)
		return 1
	}
	listeners = present(listeners)
	if len(listeners) == 0 {
		log.Print("no socket passed in LISTEN_FDS: run me under mworker run --listen ADDR, or from a systemd .socket unit")
		return 2
	}

	srv := &http.Server{
		Handler:           http.HandlerFunc(answer),
		ReadHeaderTimeout: 5 * time.Second,
	}
	failed := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() {
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				failed <- err
			}
		}()
	}

	// The sockets were bound and listening before this process started,
	// so it is ready as soon as it serves them.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Printf("cannot notify readiness: %v", err)
	}

	select {
	case err := <-failed:
		log.Printf("serve: %v", err)
		return 1
	case sig := <-stop:
		log.Printf("%v: draining", sig)
	}
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Printf("drain: %v", err)
		return 1
	}
	return 0
}

// answer tells the client which process served it.
func answer(w http.ResponseWriter, _ *http.Request) {
	fmt.Fprintf(w, "pid=%d generation=%s slot=%s\n",
		os.Getpid(), os.Getenv("MWORKER_GENERATION"), os.Getenv("MWORKER_SLOT"))
}

// present drops the nil entries activation.Listeners leaves for sockets
// that are not stream listeners (a datagram socket, say).
func present(ls []net.Listener) []net.Listener {
	var out []net.Listener
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}
