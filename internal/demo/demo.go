// Package demo is `mworker demo`: a master running the built-in HTTP
// worker (`mworker demo-worker`), to watch a zero-downtime reload with
// nothing but curl.
//
// The worker uses only what any worker gets from mworker: its listeners
// as systemd passes them (LISTEN_FDS), READY=1 on NOTIFY_SOCKET, and
// MWORKER_GENERATION / MWORKER_SLOT. Every response is one line,
// "generation=G slot=S pid=P", so a reload shows as the generation
// changing under a loop of requests, with no request failing.
package demo

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/mworker/mworker/fsm"
)

// The demo's defaults.
const (
	DefaultWorkers = 2
	DefaultListen  = "127.0.0.1:8080"
	// SocketName is the control socket's name in the runtime directory.
	SocketName = "mworker-demo.sock"
)

// WorkerCommand is the hidden mworker command that runs Worker.
const WorkerCommand = "demo-worker"

// Run is `mworker demo [--workers N] [--listen ADDR] [--control PATH]`. It
// prints how to watch and reload the demo, then replaces itself (same
// pid) with `mworker run -n N --listen ADDR --ready notify --control PATH
// -- mworker demo-worker`. It returns only on error.
func Run(args []string, stdout, stderr io.Writer) int {
	return run(args, stdout, stderr, os.Executable, syscall.Exec)
}

func run(args []string, stdout, stderr io.Writer, executable func() (string, error), exec func(string, []string, []string) error) int {
	const usage = "usage: mworker demo [--workers N] [--listen ADDR] [--control PATH]"
	fl := flag.NewFlagSet("mworker demo", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	workers := fl.Int("workers", DefaultWorkers, "HTTP workers per generation")
	addr := fl.String("listen", DefaultListen, "address the workers serve on")
	control := fl.String("control", filepath.Join(runtimeDir(), SocketName), "control socket path")
	if err := fl.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintln(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "mworker demo: %v; %s\n", err, usage)
		return 2
	}
	switch {
	case fl.NArg() > 0:
		fmt.Fprintf(stderr, "mworker demo: unexpected argument %q; %s\n", fl.Arg(0), usage)
		return 2
	case *workers < 1 || *workers > fsm.MaxWorkers:
		fmt.Fprintf(stderr, "mworker demo: --workers %d out of range: use 1..%d\n", *workers, fsm.MaxWorkers)
		return 2
	case *addr == "":
		fmt.Fprintf(stderr, "mworker demo: --listen is empty: use HOST:PORT such as %s\n", DefaultListen)
		return 2
	}
	exe, err := executable()
	if err != nil {
		fmt.Fprintf(stderr, "mworker demo: cannot find the mworker binary to run: %v\n", err)
		return 1
	}
	argv := []string{exe, "run", "-n", strconv.Itoa(*workers), "--listen", *addr,
		"--ready", "notify", "--control", *control, "--", exe, WorkerCommand}

	pid := os.Getpid()
	url := "http://" + *addr + "/"
	fmt.Fprintf(stdout, "mworker demo: master pid %d, %d HTTP workers on %s\n\n", pid, *workers, url)
	fmt.Fprintf(stdout, "  watch:   while curl -sS %s; do sleep 0.2; done\n", url)
	fmt.Fprintf(stdout, "  status:  %s status --control %s\n", exe, *control)
	fmt.Fprintf(stdout, "  reload:  %s reload --control %s   (or: kill -USR2 %d)\n", exe, *control, pid)
	fmt.Fprintf(stdout, "  stop:    Ctrl-C, or %s stop --control %s\n\n", exe, *control)
	fmt.Fprintln(stdout, "Each response names the worker's generation, slot and pid; a reload bumps the generation, and no request fails.")

	err = exec(exe, argv, os.Environ())
	fmt.Fprintf(stderr, "mworker demo: cannot run %s: %v\n", exe, err)
	return 1
}

// runtimeDir is where the demo's control socket goes: $XDG_RUNTIME_DIR
// when it is set, the temporary directory otherwise.
func runtimeDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return os.TempDir()
}
