package osadapter

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mworker/mworker/fsm"
)

var update = flag.Bool("update", false, "rewrite the generated signal table in docs/signals.md")

const (
	tableBegin = "<!-- BEGIN signal table: generated from fsm.RouteOf by `go test ./osadapter -run TestSignalsDoc -update` -->\n"
	tableEnd   = "<!-- END signal table -->\n"
)

// routeText says what the master does with a signal of each route.
var routeText = map[fsm.Route]string{
	fsm.RouteReload:    "reload: start a new generation, stop the old one once the new one is ready; only an upgrade (a new binary at the start path, or `--reexec always`) re-executes the master first, with `-sf <live pids>`",
	fsm.RouteSoftStop:  "soft stop: `--stop-signal` to every worker, wait for all, exit",
	fsm.RouteTerminate: "the same signal to every worker (current and old), wait for all, exit; a second one is forwarded again",
	fsm.RouteForward:   "forwarded to the current workers (each one's process group)",
}

// forwardText adds, for a forwarded signal that the Go runtime would not
// let through alone, how the master catches it.
var forwardText = map[fsm.Signal]string{
	fsm.SIGILL:  "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGTRAP: "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGABRT: "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGBUS:  "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGFPE:  "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGSEGV: "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGSYS:  "; only one sent with kill(2): a real fault of the master crashes it",
	fsm.SIGHUP:  "; in terminal mode (`--tty`), one that comes with the terminal hung up stops the run as SIGTERM does",
	fsm.SIGTSTP: "; then the master stops itself, unless its process group is orphaned (see Terminals)",
	fsm.SIGTTIN: "; then the master stops itself, unless its process group is orphaned (see Terminals)",
	fsm.SIGTTOU: "; then the master stops itself, unless its process group is orphaned (see Terminals)",
	fsm.SIGCONT: "; in terminal mode, the worker that had the terminal gets it back first (see Terminals)",
	fsm.SIGPROF: "; caught by a handler of mworker's own, the runtime's profiler handler drops it (osadapter/rawsig.go)",
	32:          "; caught by a handler of mworker's own, the runtime leaves it to the C library (osadapter/rawsig.go)",
	34:          "; caught by a handler of mworker's own, the runtime leaves it to the C library (osadapter/rawsig.go)",
}

// ignoredText says why a signal of RouteIgnore is not acted on, and what
// actually happens when someone sends it.
var ignoredText = map[fsm.Signal]string{
	fsm.SIGCHLD: "internal: reap every exited child (wait4 loop)",
	fsm.SIGURG:  "not caught: the Go runtime preempts goroutines with it, many times a second, and a subscriber cannot tell one sent with kill(2) from those; never forwarded",
	fsm.SIGPIPE: "caught and dropped: a write to a closed stderr or a gone control client fails instead of killing the master; the kernel's cannot be told from one sent with kill(2)",
	33:          "the Go runtime's own (a system call on every thread, as the C library uses it); one sent with kill(2) is dropped",
	fsm.SIGKILL: "cannot be caught: the master dies, the workers get SIGTERM (parent-death signal)",
	fsm.SIGSTOP: "cannot be caught: the master stops until SIGCONT",
}

// windowText says what a signal does when it arrives between the execve of
// a reload and the new image's signal.Notify.
func windowText(s fsm.Signal) string {
	switch s {
	case fsm.SIGHUP:
		return "discarded (SIG_IGN across the exec): that reload is lost, send it again"
	case fsm.SIGUSR1, fsm.SIGUSR2:
		return "held pending (blocked in every thread before execve), handled right after"
	case fsm.SIGTERM, fsm.SIGINT:
		return "before execve: held, the exec is abandoned and the master acts on it; between execve and the new image's signal.Notify: **kills the master**; the workers get SIGTERM"
	case fsm.SIGQUIT:
		return "before execve: held, the exec is abandoned and the master acts on it; between execve and the new image's signal.Notify: **the runtime dumps goroutines and exits 2**; the workers get SIGTERM"
	case fsm.SIGILL, fsm.SIGTRAP, fsm.SIGABRT, fsm.SIGBUS, fsm.SIGFPE, fsm.SIGSEGV, fsm.SIGSYS:
		return "**the runtime dumps goroutines and exits 2**; the workers get SIGTERM"
	case fsm.SIGTSTP, fsm.SIGTTIN, fsm.SIGTTOU:
		return "stops the master until SIGCONT"
	case fsm.SIGCHLD:
		return "harmless: the new image reaps at start"
	case fsm.SIGKILL, fsm.SIGSTOP:
		return "as always"
	case fsm.SIGSTKFLT:
		return "**the runtime crashes the master (exit 2)**; the workers get SIGTERM"
	case fsm.SIGURG, fsm.SIGPIPE, fsm.SIGCONT, fsm.SIGWINCH, fsm.SIGPROF, 33:
		return "dropped"
	case 32, 34:
		return "**kills the master** (the runtime leaves it at its default action); the workers get SIGTERM"
	}
	return "dropped, not forwarded (in the first fraction of a millisecond, before the runtime's handlers, its default action ends the master)"
}

func signalRow(name string, s fsm.Signal) string {
	r := fsm.RouteOf(s)
	what := routeText[r] + forwardText[s]
	if r == fsm.RouteIgnore {
		what = ignoredText[s]
		if what == "" {
			what = "not caught: a fault of the master; the Go runtime crashes it (exit 2) and the workers get SIGTERM. Never send it"
		}
	}
	return "| " + name + " | " + r.String() + " | " + what + " | " + windowText(s) + " |\n"
}

func signalTable() string {
	var b strings.Builder
	b.WriteString("| signal | route | what the master does | inside an upgrade's re-exec window |\n")
	b.WriteString("|---|---|---|---|\n")
	for s := fsm.Signal(1); s <= 31; s++ {
		b.WriteString(signalRow("SIG"+s.String()+" ("+itoa(int(s))+")", s))
	}
	for s := fsm.Signal(32); s <= 34; s++ {
		b.WriteString(signalRow("signal "+itoa(int(s)), s))
	}
	b.WriteString(signalRow("real-time 35..64", 35))
	return b.String()
}

func TestSignalsDocIsCurrent(t *testing.T) {
	path := filepath.Join("..", "docs", "signals.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, tableBegin), strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers of the generated table", path)
	}
	want := doc[:i+len(tableBegin)] + signalTable() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s is stale: run go test ./osadapter -run TestSignalsDoc -update", path)
}
