package fsm

import "strconv"

// Signal is a Linux signal number. fsm defines its own type so that the core
// imports no OS package; the values are those of Linux on every architecture
// mworker supports (amd64, arm64).
type Signal int

// The signals the core knows by name.
const (
	SIGHUP    Signal = 1
	SIGINT    Signal = 2
	SIGQUIT   Signal = 3
	SIGILL    Signal = 4
	SIGTRAP   Signal = 5
	SIGABRT   Signal = 6
	SIGBUS    Signal = 7
	SIGFPE    Signal = 8
	SIGKILL   Signal = 9
	SIGUSR1   Signal = 10
	SIGSEGV   Signal = 11
	SIGUSR2   Signal = 12
	SIGPIPE   Signal = 13
	SIGALRM   Signal = 14
	SIGTERM   Signal = 15
	SIGSTKFLT Signal = 16
	SIGCHLD   Signal = 17
	SIGCONT   Signal = 18
	SIGSTOP   Signal = 19
	SIGTSTP   Signal = 20
	SIGTTIN   Signal = 21
	SIGTTOU   Signal = 22
	SIGURG    Signal = 23
	SIGXCPU   Signal = 24
	SIGXFSZ   Signal = 25
	SIGVTALRM Signal = 26
	SIGPROF   Signal = 27
	SIGWINCH  Signal = 28
	SIGIO     Signal = 29
	SIGPWR    Signal = 30
	SIGSYS    Signal = 31
)

var signalNames = [...]string{
	SIGHUP: "HUP", SIGINT: "INT", SIGQUIT: "QUIT", SIGILL: "ILL", SIGTRAP: "TRAP",
	SIGABRT: "ABRT", SIGBUS: "BUS", SIGFPE: "FPE", SIGKILL: "KILL", SIGUSR1: "USR1",
	SIGSEGV: "SEGV", SIGUSR2: "USR2", SIGPIPE: "PIPE", SIGALRM: "ALRM", SIGTERM: "TERM",
	SIGSTKFLT: "STKFLT", SIGCHLD: "CHLD", SIGCONT: "CONT", SIGSTOP: "STOP", SIGTSTP: "TSTP",
	SIGTTIN: "TTIN", SIGTTOU: "TTOU", SIGURG: "URG", SIGXCPU: "XCPU", SIGXFSZ: "XFSZ",
	SIGVTALRM: "VTALRM", SIGPROF: "PROF", SIGWINCH: "WINCH", SIGIO: "IO", SIGPWR: "PWR",
	SIGSYS: "SYS",
}

// String returns the signal's name without the SIG prefix ("TERM"), or
// "SIG<n>" for a number without a name (real-time signals).
func (s Signal) String() string {
	if s > 0 && int(s) < len(signalNames) && signalNames[s] != "" {
		return signalNames[s]
	}
	return "SIG" + strconv.Itoa(int(s))
}

// ParseSignal accepts "TERM", "SIGTERM", "sigterm" or "15" and returns the
// signal. Real-time signals are accepted by number (34..64).
func ParseSignal(name string) (Signal, error) {
	if n, err := strconv.Atoi(name); err == nil {
		if n < 1 || n > 64 {
			return 0, errBadSignal(name)
		}
		return Signal(n), nil
	}
	up := upper(name)
	if len(up) > 3 && up[:3] == "SIG" {
		up = up[3:]
		// "SIG40" is how String prints a signal without a name.
		if n, err := strconv.Atoi(up); err == nil && n >= 1 && n <= 64 {
			return Signal(n), nil
		}
	}
	for i, n := range signalNames {
		if n != "" && n == up {
			return Signal(i), nil
		}
	}
	return 0, errBadSignal(name)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// Route is what the master does with a signal it receives.
type Route int

// The routes of signalTable.
const (
	// RouteForward sends the signal on to the current workers.
	RouteForward Route = iota
	// RouteReload re-executes the master and replaces every worker.
	RouteReload
	// RouteSoftStop sends --stop-signal to every worker and exits when all are gone.
	RouteSoftStop
	// RouteTerminate forwards the same signal to every worker, current and old, and exits.
	RouteTerminate
	// RouteIgnore drops the signal.
	RouteIgnore
)

func (r Route) String() string {
	return [...]string{"forward", "reload", "soft-stop", "terminate", "ignore"}[r]
}

// signalTable is the one place where the master's answer to each signal is
// decided. A signal not listed is forwarded to the current workers.
var signalTable = map[Signal]Route{
	SIGHUP:  RouteReload, // as HAProxy and nginx: HUP reloads
	SIGUSR2: RouteReload, // HAProxy's reload signal; survives the re-exec (see docs/signals.md)
	SIGUSR1: RouteSoftStop,
	SIGTERM: RouteTerminate,
	SIGINT:  RouteTerminate,
	// SIGCHLD is the reaper's business, not the workers'.
	SIGCHLD: RouteIgnore,
	// The Go runtime preempts goroutines with SIGURG, sent to its own
	// threads many times a second; a subscriber cannot tell those from one
	// sent with kill(2), and forwarding them would flood the workers with
	// signals they never asked for.
	SIGURG: RouteIgnore,
	// The kernel raises SIGPIPE when the master writes to a pipe or socket
	// whose reader is gone (its stderr, a control client): the master's
	// problem, which a subscriber cannot tell from one sent with kill(2).
	SIGPIPE: RouteIgnore,
	// The synchronous signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
	// SIGABRT, SIGSYS) are not listed: a real fault of the master still
	// crashes it (the Go runtime never delivers a fault to a subscriber),
	// and one sent with kill(2) is an operator's signal like any other,
	// forwarded as dumb-init forwards it (tini dies of it: e2e/peers).
	// The Go runtime runs a system call on every thread with signal 33
	// (syscall.AllThreadsSyscall, setuid), as the C library does, and
	// drops one sent with kill(2): it cannot be caught.
	33: RouteIgnore,
	// KILL and STOP cannot be caught; listed so that the table is complete.
	SIGKILL: RouteIgnore, SIGSTOP: RouteIgnore,
}

// jobControl says whether s is one of the signals that stop a shell job
// (SIGTSTP, SIGTTIN, SIGTTOU): forwarded, then the master stops as well.
func (s Signal) jobControl() bool { return s == SIGTSTP || s == SIGTTIN || s == SIGTTOU }

// RouteOf returns what the master does with sig. A number that is no
// signal (outside 1..64) is ignored: forwarding it would make kill(2) fail
// or, for 0, probe the workers instead of signalling them.
func RouteOf(sig Signal) Route {
	if r, ok := signalTable[sig]; ok {
		return r
	}
	if sig < 1 || sig > 64 {
		return RouteIgnore
	}
	return RouteForward
}

// CatchableSignals lists, in order, every signal the caller should catch:
// all signals 1..64 whose route is not RouteIgnore, plus SIGCHLD, which
// drives the reaper. Signals 32 and 34, which the C library keeps for its
// threads, are among them: a master has no C library, and forwards them.
func CatchableSignals() []Signal {
	var out []Signal
	for s := Signal(1); s <= 64; s++ {
		if RouteOf(s) != RouteIgnore || s == SIGCHLD {
			out = append(out, s)
		}
	}
	return out
}
