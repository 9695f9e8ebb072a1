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
	"net"
	"net/netip"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/listen"
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
// binds ADDR, prints how to watch and reload the demo, then replaces
// itself (same pid) with `mworker run -n N --listen ADDR --ready notify
// --control PATH -- mworker demo-worker`, which takes the bound socket
// over (listen.EnvInherited, as across a re-exec). It returns only on
// error.
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
	// Bind first: a busy port is one line and no banner. The master
	// takes the socket over as it takes its own across a re-exec, and
	// binds nothing itself.
	spec, err := listen.ParseSpec(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "mworker demo: %s\n", strings.TrimPrefix(err.Error(), "listen: "))
		return 2
	}
	ls, err := listen.Bind([]listen.Spec{spec})
	if err != nil {
		fmt.Fprintf(stderr, "mworker demo: %s\n", strings.TrimPrefix(err.Error(), "listen: "))
		return 1
	}
	defer listen.Close(ls)
	if spec.Network == listen.Unix {
		defer os.Remove(ls[0].Address) // if the exec fails
	}
	if msg := controlInUse(*control); msg != "" {
		fmt.Fprintf(stderr, "mworker demo: %s\n", msg)
		return 1
	}
	exe, err := executable()
	if err != nil {
		fmt.Fprintf(stderr, "mworker demo: cannot find the mworker binary to run: %v\n", err)
		return 1
	}
	argv := []string{exe, "run", "-n", strconv.Itoa(*workers), "--listen", *addr,
		"--ready", "notify", "--control", *control, "--", exe, WorkerCommand}

	pid := os.Getpid()
	me := commandName(exe)
	url, curl := reach(spec, ls[0])
	fmt.Fprintf(stdout, "mworker demo: master pid %d, %d HTTP workers on %s\n\n", pid, *workers, url)
	fmt.Fprintf(stdout, "  watch:   while %s; do sleep 0.2; done\n", curl)
	fmt.Fprintf(stdout, "  status:  %s status --control %s\n", me, *control)
	fmt.Fprintf(stdout, "  reload:  %s reload --control %s   (or: kill -USR2 %d)\n", me, *control, pid)
	fmt.Fprintf(stdout, "  stop:    Ctrl-C, or %s stop --control %s\n\n", me, *control)
	fmt.Fprintln(stdout, "Each response names the worker's generation, slot and pid; a reload bumps the generation, and no request fails.")

	files := listen.Files(ls)
	if err := listen.KeepOnExec(files); err != nil {
		fmt.Fprintf(stderr, "mworker demo: cannot pass the socket on: %v\n", err)
		return 1
	}
	env := append(os.Environ(), listen.EnvInherited+"="+listen.Encode(ls))
	err = exec(exe, argv, env)
	listen.CloseOnExec(files)
	fmt.Fprintf(stderr, "mworker demo: cannot run %s: %v\n", exe, err)
	return 1
}

// reach is the URL of the demo's listener and the curl command that gets
// it: a wildcard host is reached on loopback (127.0.0.1 when the spec's
// host is empty: that socket takes IPv4 as well), a unix socket through
// curl --unix-socket.
func reach(spec listen.Spec, l listen.Listener) (url, curl string) {
	if l.Network == listen.Unix {
		return "unix://" + l.Address, "curl -sS --unix-socket " + l.Address + " http://localhost/"
	}
	host, port, err := net.SplitHostPort(l.Address)
	if err != nil {
		host, port = l.Address, ""
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		if specHost, _, _ := net.SplitHostPort(spec.Address); ip.Is4() || specHost == "" {
			host = "127.0.0.1"
		} else {
			host = "::1"
		}
	}
	url = "http://" + net.JoinHostPort(host, port) + "/"
	return url, "curl -sS " + url
}

// commandName is how the instructions name mworker: as "mworker" when
// that is the binary found in PATH, as "go run ./cmd/mworker" when it
// runs from the build cache of go run (and the current directory has the
// source), else by its path.
func commandName(exe string) string {
	if strings.Contains(exe, string(filepath.Separator)+"go-build") && filepath.Base(filepath.Dir(exe)) == "exe" {
		if fi, err := os.Stat(filepath.Join("cmd", "mworker")); err == nil && fi.IsDir() {
			return "go run ./cmd/mworker"
		}
		return "mworker"
	}
	if p, err := osexec.LookPath("mworker"); err == nil {
		if a, err := filepath.Abs(p); err == nil && sameFile(a, exe) {
			return "mworker"
		}
	}
	return exe
}

func sameFile(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

// controlInUse says why path cannot be the demo's control socket when
// another master answers there (a demo already running), or "".
func controlInUse(path string) string {
	c, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		return ""
	}
	c.Close()
	return fmt.Sprintf("%s is in use: another mworker demo runs; stop it with mworker stop --control %s, or give another --control", path, path)
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
