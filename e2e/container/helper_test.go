package container

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// envHelper, when set, makes the test binary a worker instead of running
// the tests; its value names the program (see helperMain). It must not
// start with "MWORKER_": mworker keeps those from its workers.
const envHelper = "CONTAINER_TEST_HELPER"

// envRunning is set while the tests run, so that a test binary started
// as a worker without envHelper fails at once instead of running every
// test again, each starting more masters.
const envRunning = "CONTAINER_TEST_RUNNING"

// Variables a "trap" helper reads.
const (
	envReadyFile = "HELPER_READY_FILE" // created once the handlers are in place
	envGotFile   = "HELPER_GOT_FILE"   // receives the name of the signal caught
	envExit      = "HELPER_EXIT"       // the status to exit with after it
)

// helperMain runs the helper program mode and returns its exit status.
//
// "trap" catches SIGTERM and SIGINT, writes the one it got to
// $HELPER_GOT_FILE and exits with $HELPER_EXIT. Being a Go program, it
// catches SIGINT even if it was started with SIGINT ignored, which a
// shell's trap could not.
func helperMain(mode string) int {
	switch mode {
	case "trap":
		code, err := strconv.Atoi(os.Getenv(envExit))
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper: %s=%q is not a number\n", envExit, os.Getenv(envExit))
			return 100
		}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		if err := writeAtomic(os.Getenv(envReadyFile), strconv.Itoa(os.Getpid())); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 101
		}
		sig := <-sigs
		if err := writeAtomic(os.Getenv(envGotFile), sig.String()); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 102
		}
		return code
	}
	fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
	return 103
}

// writeAtomic writes data to path so that a reader sees all of it or
// nothing.
func writeAtomic(path, data string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// syncBuffer is a bytes.Buffer that a process's output goroutines and the
// test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
