// Mworker is a master-worker process supervisor for Linux, in the manner of
// HAProxy's master-worker mode. One master process starts N copies of a
// worker command, keeps their listening sockets, forwards signals, reaps
// every child, reloads the whole worker generation without dropping a
// connection, and exits with a status that tells the truth.
//
// Usage:
//
//	mworker run [options] -- COMMAND [ARG...]
//	mworker reload       --control PATH [--json] [--timeout D]
//	mworker status       --control PATH [--json] [--timeout D]
//	mworker stop         --control PATH [--json] [--wait] [--timeout D]
//	mworker scale N      --control PATH [--json] [--timeout D]
//	mworker restart SLOT --control PATH [--json] [--timeout D]
//	mworker demo         [--workers N] [--listen ADDR] [--control PATH]
//	mworker version
//	mworker help
//
// Control commands, sent to the --control socket of a running master:
//
//	reload        start a new generation, wait until it is ready or rolled back
//	status        print the master and its workers (a table, or JSON with --json)
//	stop          begin a soft stop, as SIGUSR1
//	scale N       set the number of workers to N, or change it by +K or -K; new slots start at once, removed ones get --stop-signal
//	restart SLOT  replace the worker of slot SLOT without downtime: the new one starts, becomes ready, then the old one stops
//
// The control commands take their --control from $MWORKER_CONTROL when it is not given;
// mworker stop --wait returns once the master has exited, with its exit status.
//
// # mworker run
//
// Run starts the master in the foreground. Its options end at "--"; every
// word after it is the worker's command, looked up in PATH when it has no
// slash (relative PATH entries such as "." are skipped). Each option takes
// its value as "--opt value" or "--opt=value".
//
//	-n, --workers N        workers per generation, 1..1024 (default 1)
//	--listen [NAME=]ADDR   repeatable; tcp://HOST:PORT, HOST:PORT or
//	                       unix:///PATH, bound once by the master and passed
//	                       to every worker as fd 3.. with LISTEN_FDS,
//	                       LISTEN_PID and LISTEN_FDNAMES set as systemd does
//	--listen-nonblocking yes|no
//	                       yes: make the --listen sockets non-blocking
//	                       (O_NONBLOCK, shared by every worker), as systemd's
//	                       NonBlocking=yes, for a server that expects it of
//	                       inherited sockets (nginx); no: blocking, as
//	                       systemd passes them (default no)
//	--fd-env NAME=FORMAT   repeatable; also name the listener fds in the
//	                       variable NAME, for servers that ignore LISTEN_FDS:
//	                       {fds} in FORMAT becomes the fds joined by commas,
//	                       {fds:SEP} joined by SEP; nginx: --fd-env
//	                       'NGINX={fds:;};' gives NGINX=3;4;
//	--ready MODE           when a new worker counts as ready: a duration it
//	                       must stay up (a new generation that exits sooner
//	                       is rolled back), notify (it sends READY=1 to
//	                       NOTIFY_SOCKET) or immediate (at once: no
//	                       rollback once started) (default 1s)
//	--ready-timeout D      a new generation not ready by then is rolled
//	                       back (default 30s)
//	--stop-signal SIG      graceful stop signal for old workers and for a
//	                       soft stop: TERM, SIGQUIT, 3... (default TERM)
//	--stop-timeout D       a stopping worker still alive after D gets
//	                       SIGKILL (default 10s)
//	--max-old-generations K
//	                       at most K old generations drain at once: a
//	                       reload that would leave more SIGKILLs the
//	                       oldest at once, logged with its pids; 0: none
//	                       drains, the old generation gets SIGKILL once
//	                       the new one is ready (default 4)
//	--batch K              rolling reloads: start the new generation K
//	                       workers at a time, each batch ready and its old
//	                       workers gone before the next; 0: all at once
//	                       (default 0)
//	--restart POLICY       always, on-failure or no: what happens when a
//	                       current worker exits on its own (default always)
//	--backoff MIN..MAX     restart delays: MIN, doubled after each failure
//	                       up to MAX, back to MIN once a worker has stayed
//	                       up 60s; each delay is drawn in [d/2, d) so that
//	                       workers that fail together restart apart
//	                       (default 100ms..30s)
//	--restart-limit N/WINDOW
//	                       give up when one slot fails N times within
//	                       WINDOW (e.g. 5/60s) without staying up 60s:
//	                       stop every worker and exit with that worker's
//	                       status, so that systemd's Restart= or the
//	                       container runtime acts (default off)
//	--watchdog D           a worker that has sent WATCHDOG=1 to its
//	                       NOTIFY_SOCKET and then sends none for D, or
//	                       sends WATCHDOG=trigger, is stopped and restarted
//	                       as --restart says; every worker gets
//	                       WATCHDOG_USEC and WATCHDOG_PID (its own pid) as
//	                       systemd sets them; 0 or off: none (default off)
//	--shutdown-delay D     on a stop (TERM, INT, USR1, mworker stop), keep
//	                       serving D before telling the workers: the
//	                       listeners stay open and /readyz answers 503, so
//	                       that a load balancer or Kubernetes stops sending
//	                       new connections first; a second stop cuts it
//	                       short (default 0)
//	--success-exit N       repeatable; a worker status N (0..255; 143 is
//	                       death by SIGTERM) that would be the master's
//	                       exit status counts as 0
//	--user NAME|UID        run the workers as this user, with its primary
//	                       group and no supplementary groups, while the
//	                       master (started as root) keeps the listeners
//	                       and the control socket
//	--group NAME|GID       with --user: the workers' group instead of the
//	                       user's primary group
//	--reexec WHEN          when a reload re-executes the master: upgrade
//	                       (only when the binary at the start path is not
//	                       the running one), always or never; a reload
//	                       that does not re-execute starts the new
//	                       generation in place (default upgrade)
//	--control PATH         unix control socket for reload, status, stop,
//	                       scale and restart (mode 0600, same-uid peers
//	                       only)
//	--pidfile PATH         write the master's pid there, atomically
//	--metrics ADDR         serve HTTP on ADDR (HOST:PORT, tcp://HOST:PORT
//	                       or unix:///PATH): /metrics in the Prometheus
//	                       text format, /healthz (answered by the
//	                       master's event loop: 503 when it does not
//	                       answer within 500ms) and /readyz (200 while a
//	                       worker that is not stopping is ready and no
//	                       stop has begun, else 503)
//	--log-format FORMAT    text or json, logs go to stderr (default text)
//	--worker-output MODE   inherit: workers write to the master's own
//	                       stdout and stderr; prefix: the master reads
//	                       them through pipes and writes each line
//	                       tagged [gGEN sSLOT pPID]; json: each line one
//	                       JSON object (time, stream, pid, generation,
//	                       slot, text), so that with --log-format json
//	                       the whole output is NDJSON; lines over 16 KiB
//	                       are cut and marked, a stalled reader drops
//	                       lines (counted in status) and never blocks
//	                       (default inherit)
//	--tty MODE             on: the worker is the foreground process group
//	                       of the terminal on stdin, so that an
//	                       interactive program (a shell, a REPL) reads
//	                       it and has job control; Ctrl-C and Ctrl-Z
//	                       reach the worker, and its Ctrl-Z stops the
//	                       master as a shell job; --restart defaults to
//	                       no; auto: on when stdin is mworker's terminal
//	                       and it runs in the foreground, with one
//	                       worker, no listeners and --worker-output
//	                       inherit; off: the terminal's signals reach
//	                       the master (default auto)
//	--log-level LEVEL      debug, info, warn or error: the lowest level
//	                       logged (default info)
//	-sf PID...             once the first generation is ready, send
//	                       --stop-signal to these processes (HAProxy's -sf)
//	-st PID...             the same with SIGTERM (HAProxy's -st)
//
// Durations are Go durations: 500ms, 10s, 1m30s.
//
// A restarted worker that dies within a second of its start 3 times in a
// row earns one warning with the likely causes: it binds its own port
// instead of using fd 3 from --listen ("address already in use"), its
// command or a file it needs is missing, or its configuration is bad.
//
// A worker counts as ready, by default, once it has stayed up 1s: a
// reload whose new workers exit within that second (a configuration they
// reject after starting) fails and the old workers keep serving. Every
// reload, and the first READY=1 to systemd, waits that second. A worker
// that can say when it serves should use --ready notify, which trusts
// READY=1 at once; --ready immediate skips the wait and the protection.
//
// When the binary at its start path has been replaced (an upgrade), the
// master runs it once before the reload's re-exec as "mworker run
// --check-handover ARGS..." (an option for that use only): a binary that
// rejects the command line or the handover, crashes or does not answer
// within 10s fails the reload, and the master keeps its workers.
//
// # Signals
//
// The master handles the signals it receives as follows:
//
//	SIGUSR2, SIGHUP   reload: start a new generation, stop the old one once
//	                  the new one is ready; an upgrade (a new binary at the
//	                  start path) first re-execs it with "-sf <live pids>"
//	SIGUSR1           soft stop: send --stop-signal to every worker, wait,
//	                  exit
//	SIGTERM, SIGINT   forward the same signal to every worker, wait, exit;
//	                  a second one is forwarded again
//	SIGCHLD           reap children
//	any other         forwarded to the current workers (SIGQUIT, SIGTTIN,
//	                  SIGTTOU, SIGWINCH, ...)
//
// A stop during an ordinary reload drains as any other. During an upgrade's
// re-exec, SIGUSR1 is the stop signal that is always handled; a SIGTERM or
// SIGINT in the new image's first milliseconds ends the master, and with
// it every worker (see docs/signals.md). Each worker runs in its own process group; forwarded, stop and
// kill signals go to the whole group. When the master dies, even by
// SIGKILL, every worker is told to stop.
//
// # Exit status
//
//	0..255   a current worker's status when its exit ends the run (with
//	         --restart=no, the failure that reached --restart-limit, or
//	         after a stop: the first current worker that failed, 0 if
//	         none did); a worker
//	         killed by a signal counts as 128+signal
//	1        mworker could not start (e.g. an address cannot be bound)
//	2        bad command line: unknown option, bad value, missing "--"
//	126      the command is not executable (or is a directory)
//	127      the command was not found
//
// Bad input is reported as one line on stderr, before anything starts.
//
// # Control commands
//
// The control commands talk to the --control socket of a running master.
// Reload waits for the outcome and exits 0 when the new generation is
// ready, 1 when it failed and was rolled back. Status prints a table, or
// the JSON object with --json. Stop begins a soft stop, as SIGUSR1. Scale
// sets the number of workers (scale 8) or changes it (scale +2, scale -1)
// and is answered at once. Restart replaces the worker of one slot (the
// SLOT column of status) and waits until the new one is ready (exit 0) or
// has failed (exit 1). The argument of scale and restart may come before
// or after the options; a bad one is refused before anything is sent.
// They exit 0 on success, 1 on failure (the reason on stderr) and 2 on a
// bad command line; --timeout bounds the wait for the answer, connecting
// included: a master whose control socket queue is full (a storm of
// requests during a re-exec) is tried again until then. Stop --wait
// waits, 5m by default, until the master has exited and exits with the
// master's own status. Without --control, the path is taken from
// $MWORKER_CONTROL. "mworker CMD --help" gives each command's options,
// defaults and exit statuses. Their options follow the rules of run's:
// "--opt value" or "--opt=value", long names only.
//
// Demo runs a master with two built-in HTTP workers on 127.0.0.1:8080 and
// prints how to reload and watch it.
//
// # Examples
//
// Four workers of a server that inherits port 8080, reloaded when it says
// it is ready:
//
//	mworker run -n 4 --listen :8080 --ready notify --control /run/app.sock -- ./server
//	mworker reload --control /run/app.sock
//
// A single worker restarted only when it fails, as PID 1 of a container:
//
//	mworker run --restart on-failure --stop-timeout 30s -- /app/worker --queue jobs
//
// Reload with a signal:
//
//	kill -USR2 "$(cat /run/app.pid)"
package main

import (
	// First: its init catches every signal before the packages below
	// initialize (docs/signals.md, "The master's first milliseconds").
	_ "github.com/mworker/mworker/internal/earlysig"

	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/demo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run carries out one mworker command line (without the program name) and
// returns the process's exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, shortUsage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	if _, ok := fsm.LookupCommand(cmd); ok {
		return control.RunClient(cmd, rest, stdout, stderr)
	}
	switch cmd {
	case "run":
		return runMaster(rest, stdout, stderr)
	case "demo":
		return demo.Run(rest, stdout, stderr)
	case demo.WorkerCommand: // hidden: the demo's HTTP worker
		return demo.Worker(rest, stdout, stderr)
	case "version", "--version":
		return printVersion(stdout)
	case "help", "--help", "-h":
		if len(rest) > 0 && rest[0] == "run" {
			fmt.Fprint(stdout, runManual())
			return 0
		}
		fmt.Fprint(stdout, shortUsage)
		return 0
	}
	fmt.Fprintf(stderr, "mworker: unknown command %q: use %s\n", cmd, commandWords())
	return exitUsage
}

// shortUsage is the text of "mworker help". Its control commands are
// written from fsm.Commands, the table the control client and the master
// read, so that the usage cannot miss one; the package documentation
// repeats it (TestUsageListsEveryCommand).
var shortUsage = usage()

func usage() string {
	width := len("demo")
	for _, c := range fsm.Commands {
		width = max(width, len(c.Synopsis()))
	}
	var b strings.Builder
	b.WriteString("Usage:\n  mworker run [options] -- COMMAND [ARG...]\n")
	for _, c := range fsm.Commands {
		fmt.Fprintf(&b, "  mworker %-*s %s\n", width, c.Synopsis(), control.UsageFlags(c))
	}
	fmt.Fprintf(&b, "  mworker %-*s %s\n", width, "demo", "[--workers N] [--listen ADDR] [--control PATH]")
	b.WriteString("  mworker version\n\nControl commands, sent to the --control socket of a running master:\n")
	for _, c := range fsm.Commands {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, c.Synopsis(), c.Help)
	}
	b.WriteString("\nThe control commands take their --control from $" + control.EnvControl + " when it is not given;\n" +
		"mworker stop --wait returns once the master has exited, with its exit status.\n")
	b.WriteString("\nRun \"mworker run --help\" for the options, signals and exit statuses.\n" +
		"Run \"mworker CMD --help\" for those of a control command.\n")
	return b.String()
}

// commandWords lists every mworker command for the error that names an
// unknown one.
func commandWords() string {
	words := append([]string{"run"}, fsm.CommandNames()...)
	return fsm.JoinWords(append(words, "demo", "version", "help"), "or")
}
