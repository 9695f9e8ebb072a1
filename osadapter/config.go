package osadapter

import (
	"io"
	"log/slog"
	"syscall"

	"github.com/mworker/mworker/fsm"
)

// Config is what the command line hands to Run.
type Config struct {
	// Machine configures the core. Run fills in Path (the absolute path the
	// master was started from, for re-exec), Argv (os.Args) and Resume (the
	// handover of the image that exec'd this one) when they are empty.
	Machine fsm.Config

	// Command is the worker's command line; Command[0] is already resolved
	// (an absolute path or a path with a slash) and checked executable.
	Command []string

	// Listen are the --listen specs ([NAME=]ADDR), bound once by the master
	// before any worker starts and passed to every worker as fd 3...
	Listen []string
	// ListenNonblocking makes the Listen sockets non-blocking (O_NONBLOCK
	// on the open file description the workers share), as systemd's
	// NonBlocking=yes: for a server that expects it of inherited sockets
	// and does not set it itself (nginx). Blocking otherwise, as systemd
	// passes sockets by default.
	ListenNonblocking bool
	// FdEnv are the --fd-env variables: each names the listener fds in a
	// server's own format (fdenv.go).
	FdEnv []FdEnv
	// Control is the path of the control socket, or "".
	Control string
	// PidFile is where the master's pid is written atomically, or "".
	PidFile string
	// Metrics is the address of the HTTP server of /metrics, /healthz and
	// /readyz (HOST:PORT, tcp://HOST:PORT or unix:///PATH), or "".
	Metrics string

	// Credential, when set (--user, --group), is the uid, gid and
	// supplementary groups every worker runs with: the master keeps its
	// own (root), its listeners and its control socket; the notify
	// sockets are made reachable by that uid (ready.go).
	Credential *syscall.Credential
	// User and Group are --user and --group as given (a name or a
	// number); the command line resolves them into Credential.
	User, Group string

	// CheckTakeover runs the takeover check before every re-exec: the
	// binary at the start path is run with CheckFlag inserted after
	// argv[1] and must answer it (CheckHandover, exit 0) for the execve to
	// go ahead. mworker's command line sets it; an embedder whose binary
	// answers CheckFlag may.
	CheckTakeover bool

	// LogFormat is "text" or "json"; LogLevel the lowest level logged.
	LogFormat string
	LogLevel  slog.Level
	// Stderr receives the logs; os.Stderr when nil.
	Stderr io.Writer
	// Version is the version status reports for this image; the module
	// version of the binary (or "devel") when empty.
	Version string

	// WorkerOutput is --worker-output: "" or WorkerOutputInherit (the
	// workers write to the master's own fds 1 and 2), WorkerOutputPrefix
	// or WorkerOutputJSON (the master reads each worker's stdout and
	// stderr through pipes and writes each line, tagged, to Stdout and
	// Stderr; workerout.go).
	WorkerOutput string
	// Terminal is --tty: TerminalAuto, TerminalOn, or TerminalOff ("" too:
	// an embedder opts in; the command line defaults to auto)
	// (terminal.go). In terminal mode the worker is the terminal's
	// foreground process group, and, unless RestartGiven, Machine.Restart
	// becomes fsm.RestartNo: an interactive program that exits is done,
	// as under tini.
	Terminal string
	// RestartGiven says that Machine.Restart was set on purpose (--restart).
	RestartGiven bool
	// listeners is how many listeners Run took (--listen, activation).
	listeners int

	// Stdout receives the workers' stdout lines with WorkerOutput prefix
	// or json; os.Stdout when nil.
	Stdout io.Writer

	// Run builds mworker's own transports from the fields above and from
	// its environment: with Machine.Ready notify or Machine.Watchdog, a
	// notify socket per worker (WorkerReady, WorkerWatchdog), and with
	// Machine.Watchdog, WATCHDOG_USEC and WATCHDOG_PID for each worker; with Control, the control socket
	// (ControlRequest, Reply); with NOTIFY_SOCKET, the master's own
	// service manager (Notify); with LISTEN_FDS/LISTEN_PID for its pid,
	// the activated sockets, passed to workers before those of Listen.
	// The fields below are for an embedder's extra transports.

	// Events are events from transports the adapter does not own; nil
	// when there are none.
	Events <-chan fsm.Event
	// Notifier, when set, carries Notify actions in place of
	// NOTIFY_SOCKET; Replier carries Reply actions when Control is empty.
	// Without either, those actions are only logged at debug level.
	Notifier Notifier
	Replier  Replier
	// PrepareExec, when set, is called just before the master re-executes
	// itself, with the core's handover. It returns variables to add to the
	// new image's environment (they replace variables of the same name;
	// names should start with "MWORKER_", which workers never see) and an
	// undo that Run calls if execve fails. An error fails the reload.
	PrepareExec func(fsm.Handover) (env []string, undo func(), err error)
}

// Environment variables a worker sees (besides systemd's LISTEN_* and
// NOTIFY_SOCKET).
const (
	EnvGeneration = "MWORKER_GENERATION"
	EnvSlot       = "MWORKER_SLOT"
)
