// App is the application of the image the podman tests build, at
// /usr/local/bin/app where the Dockerfile of docs/containers.md puts
// one: a static binary, since the image has no shell. It runs mworker's
// demo worker (which serves on the sockets it is passed, says READY=1,
// answers GET /?sleep=D after D and drains on a stop signal), except with
// E2E_APP=ignore-term in its environment: it then says READY=1
// and ignores SIGTERM, a worker that does not stop.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mworker/mworker/internal/sdnotify"
)

// mworker is where the Dockerfile copies mworker.
const mworker = "/usr/local/bin/mworker"

func main() {
	if os.Getenv("E2E_APP") == "ignore-term" {
		signal.Ignore(syscall.SIGTERM)
		if err := sdnotify.Notify("READY=1"); err != nil {
			fmt.Fprintln(os.Stderr, "app:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "app pid=%d: ready, ignoring SIGTERM\n", os.Getpid())
		for {
			time.Sleep(time.Hour)
		}
	}
	err := syscall.Exec(mworker, []string{mworker, "demo-worker"}, os.Environ())
	fmt.Fprintln(os.Stderr, "app: exec", mworker, "demo-worker:", err)
	os.Exit(1)
}
