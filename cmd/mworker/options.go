package main

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/listen"
	"github.com/mworker/mworker/osadapter"
)

// Exit statuses of mworker's own failures (docs/design.md, "Exit status of
// the master").
const (
	exitUsage         = 2
	exitNotExecutable = 126
	exitNotFound      = 127
)

// maxOldGenerations is the largest --max-old-generations.
const maxOldGenerations = 10000

// maxPid is the kernel's PID_MAX_LIMIT: no process id is larger.
const maxPid = 1 << 22

// usageError is bad input found before anything starts: one line for
// stderr (without the "mworker: " prefix) and the exit status it calls for.
type usageError struct {
	status int
	msg    string
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) *usageError {
	return &usageError{status: exitUsage, msg: fmt.Sprintf(format, a...)}
}

// errHelp is returned by parseRunArgs for -h and --help.
var errHelp = errors.New("help requested")

// option is one option of "mworker run" that takes a value. The table of
// options drives both the parser and the options section of --help.
type option struct {
	long  string // "--workers"
	short string // "-n", or ""
	arg   string // the value's placeholder in the manual
	def   string // the default shown in the manual, or ""
	help  string // one line for the manual
	set   func(cfg *osadapter.Config, value string) error
}

var runOptions = []option{
	{long: "--workers", short: "-n", arg: "N", def: "1",
		help: "workers per generation, 1..1024",
		set: func(c *osadapter.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > fsm.MaxWorkers {
				return usagef("bad --workers %q: use a number from 1 to %d", v, fsm.MaxWorkers)
			}
			c.Machine.Workers = n
			return nil
		}},
	{long: "--listen", arg: "[NAME=]ADDR",
		help: "repeatable; tcp://HOST:PORT, HOST:PORT or unix:///PATH, passed to workers as fd 3..",
		set: func(c *osadapter.Config, v string) error {
			c.Listen = append(c.Listen, v) // checked as a whole below
			return nil
		}},
	{long: "--listen-nonblocking", arg: "yes|no", def: "no",
		help: "yes: make the --listen sockets non-blocking (O_NONBLOCK, shared by every worker), as systemd's NonBlocking=yes, for a server that expects it of inherited sockets (nginx); no: blocking, as systemd passes them",
		set: func(c *osadapter.Config, v string) error {
			switch v {
			case "yes":
				c.ListenNonblocking = true
			case "no":
				c.ListenNonblocking = false
			default:
				return usagef("bad --listen-nonblocking %q: use yes or no", v)
			}
			return nil
		}},
	{long: "--fd-env", arg: "NAME=FORMAT",
		help: "repeatable; also name the listener fds in the variable NAME, for servers that ignore LISTEN_FDS: FORMAT is text where {fds} becomes the fds joined by commas and {fds:SEP} joined by SEP; nginx: --fd-env 'NGINX={fds:;};' gives NGINX=3;4;",
		set: func(c *osadapter.Config, v string) error {
			e, err := osadapter.ParseFdEnv(v)
			if err != nil {
				return usagef("%s", err)
			}
			for _, o := range c.FdEnv {
				if o.Name == e.Name {
					return usagef("--fd-env %s given twice (%s and %s): keep one", e.Name, o, e)
				}
			}
			c.FdEnv = append(c.FdEnv, e)
			return nil
		}},
	{long: "--ready", arg: "MODE", def: fsm.DefaultReady.String(),
		help: "when a new worker counts as ready: a duration it must stay up (a new generation that exits sooner is rolled back), notify (READY=1 to NOTIFY_SOCKET) or immediate (at once: no rollback once started)",
		set: func(c *osadapter.Config, v string) error {
			r, err := fsm.ParseReadyMode(v)
			if err != nil {
				return usagef("%s", trimPackage(err))
			}
			c.Machine.Ready = r
			return nil
		}},
	{long: "--ready-timeout", arg: "D", def: "30s",
		help: "a new generation not ready by then is rolled back",
		set: func(c *osadapter.Config, v string) error {
			return parseDuration("--ready-timeout", v, &c.Machine.ReadyTimeout)
		}},
	{long: "--stop-signal", arg: "SIG", def: "TERM",
		help: "graceful stop signal for old workers and soft stop",
		set: func(c *osadapter.Config, v string) error {
			s, err := fsm.ParseSignal(v)
			if err != nil {
				return usagef("bad --stop-signal: %s", trimPackage(err))
			}
			if s == fsm.SIGSTOP || s == fsm.SIGCHLD {
				return usagef("bad --stop-signal %q: a worker cannot stop on %s; use TERM, QUIT, INT or USR1", v, s)
			}
			c.Machine.StopSignal = s
			return nil
		}},
	{long: "--stop-timeout", arg: "D", def: "10s",
		help: "a stopping worker still alive after D gets SIGKILL",
		set: func(c *osadapter.Config, v string) error {
			return parseDuration("--stop-timeout", v, &c.Machine.StopTimeout)
		}},
	{long: "--max-old-generations", arg: "K", def: strconv.Itoa(fsm.DefaultMaxOldGenerations),
		help: "at most K old generations drain at once: a reload that would leave more SIGKILLs the oldest at once; 0: none drains",
		set: func(c *osadapter.Config, v string) error {
			// An upper bound only so that a typo of many digits is caught:
			// no machine runs 10,000 generations of workers.
			k, err := strconv.Atoi(v)
			if err != nil || k < 0 || k > maxOldGenerations {
				return usagef("bad --max-old-generations %q: use a number of generations from 0 (none drains) to %d", v, maxOldGenerations)
			}
			if k == 0 {
				k = fsm.NoOldGenerations
			}
			c.Machine.MaxOldGenerations = k
			return nil
		}},
	{long: "--batch", arg: "K", def: "0",
		help: "rolling reloads: start the new generation K workers at a time, each batch ready and its old workers gone before the next; 0: all at once",
		set: func(c *osadapter.Config, v string) error {
			k, err := strconv.Atoi(v)
			if err != nil || k < 0 || k > fsm.MaxWorkers {
				return usagef("bad --batch %q: use a number of workers from 1 to %d, or 0 for the whole generation at once", v, fsm.MaxWorkers)
			}
			c.Machine.Batch = k
			return nil
		}},
	{long: "--restart", arg: "POLICY", def: "always",
		help: "always, on-failure or no, when a current worker exits on its own",
		set: func(c *osadapter.Config, v string) error {
			p, err := fsm.ParseRestartPolicy(v)
			if err != nil {
				return usagef("%s", trimPackage(err))
			}
			c.Machine.Restart = p
			c.RestartGiven = true
			return nil
		}},
	{long: "--backoff", arg: "MIN..MAX", def: fsm.DefaultBackoff.String(),
		help: "restart delays: MIN, doubled after each failure up to MAX, back to MIN once a worker stayed up 60s; each delay is drawn in [d/2, d) so that workers that fail together restart apart",
		set: func(c *osadapter.Config, v string) error {
			b, err := fsm.ParseBackoff(v)
			if err != nil {
				return usagef("%s", trimPackage(err))
			}
			c.Machine.Backoff = b
			return nil
		}},
	{long: "--restart-limit", arg: "N/WINDOW", def: "off",
		help: "give up when one slot fails N times within WINDOW (e.g. 5/60s) without staying up 60s: stop every worker, exit with that worker's status, and let systemd's Restart= or the container runtime act",
		set: func(c *osadapter.Config, v string) error {
			l, err := fsm.ParseRestartLimit(v)
			if err != nil {
				return usagef("%s", trimPackage(err))
			}
			c.Machine.RestartLimit = l
			return nil
		}},
	{long: "--watchdog", arg: "D", def: "off",
		help: "a worker that has sent WATCHDOG=1 to its NOTIFY_SOCKET and then sends none for D, or sends WATCHDOG=trigger, is stopped and restarted as --restart says; workers get WATCHDOG_USEC and WATCHDOG_PID as systemd sets them; 0 or off: none",
		set: func(c *osadapter.Config, v string) error {
			if v == "off" {
				c.Machine.Watchdog = 0
				return nil
			}
			// Under a millisecond, WATCHDOG_USEC would be 0 or a period no
			// worker could keep: a typo.
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || d > 0 && d < time.Millisecond {
				return usagef("bad --watchdog %q: use a duration of 1ms or more such as 30s, or 0 (off)", v)
			}
			c.Machine.Watchdog = d
			return nil
		}},
	{long: "--shutdown-delay", arg: "D", def: "0",
		help: "on a stop (TERM, INT, USR1, mworker stop), keep serving D before telling the workers (listeners open, /readyz 503): time for a load balancer or Kubernetes to stop sending new connections; a second stop cuts it short",
		set: func(c *osadapter.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return usagef("bad --shutdown-delay %q: use a duration such as 5s, or 0 (none)", v)
			}
			c.Machine.ShutdownDelay = d
			return nil
		}},
	{long: "--success-exit", arg: "N",
		help: "repeatable; a worker status N (0..255; 143 is death by SIGTERM) that would be the master's exit status counts as 0",
		set: func(c *osadapter.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 255 {
				return usagef("bad --success-exit %q: use an exit status from 0 to 255, such as 143 (killed by SIGTERM)", v)
			}
			c.Machine.SuccessExit = append(c.Machine.SuccessExit, n)
			return nil
		}},
	{long: "--user", arg: "NAME|UID",
		help: "run the workers as this user (its primary group, no supplementary groups) while the master, started as root, keeps the listeners and the control socket",
		set: func(c *osadapter.Config, v string) error {
			if v == "" {
				return usagef("empty --user: use a user name such as www-data or a numeric uid")
			}
			c.User = v
			return nil
		}},
	{long: "--group", arg: "NAME|GID",
		help: "with --user: the workers' group instead of the user's primary group",
		set: func(c *osadapter.Config, v string) error {
			if v == "" {
				return usagef("empty --group: use a group name such as www-data or a numeric gid")
			}
			c.Group = v
			return nil
		}},
	{long: "--reexec", arg: "WHEN", def: "upgrade",
		help: "when a reload re-executes: upgrade (a new binary at the start path), always or never",
		set: func(c *osadapter.Config, v string) error {
			p, err := fsm.ParseReexecPolicy(v)
			if err != nil {
				return usagef("%s", trimPackage(err))
			}
			c.Machine.Reexec = p
			return nil
		}},
	{long: "--control", arg: "PATH",
		help: "unix control socket (mode 0600) for " + fsm.CommandList("and"),
		set: func(c *osadapter.Config, v string) error {
			if v == "" {
				return usagef("empty --control: use the path of a socket to create, such as /run/app.sock")
			}
			c.Control = v
			return nil
		}},
	{long: "--pidfile", arg: "PATH",
		help: "write the master's pid there, atomically",
		set: func(c *osadapter.Config, v string) error {
			if v == "" {
				return usagef("empty --pidfile: use a file path such as /run/app.pid")
			}
			c.PidFile = v
			return nil
		}},
	{long: "--metrics", arg: "ADDR",
		help: "serve HTTP on ADDR (HOST:PORT or unix:///PATH): /metrics for Prometheus, /healthz (the master's event loop answers) and /readyz (200 while a worker is ready and no stop has begun)",
		set: func(c *osadapter.Config, v string) error {
			s, err := listen.ParseSpec(v)
			if err != nil || s.Name != listen.DefaultName(s.Address) {
				return usagef("bad --metrics %q: use HOST:PORT (such as 127.0.0.1:9100 or :9100), tcp://HOST:PORT or unix:///PATH", v)
			}
			c.Metrics = v
			return nil
		}},
	{long: "--log-format", arg: "FORMAT", def: "text",
		help: "text or json; logs go to stderr",
		set: func(c *osadapter.Config, v string) error {
			if v != "text" && v != "json" {
				return usagef("bad --log-format %q: use text or json", v)
			}
			c.LogFormat = v
			return nil
		}},
	{long: "--worker-output", arg: "MODE", def: osadapter.WorkerOutputInherit,
		help: "inherit (workers write to the master's stdout and stderr), prefix (the master writes each worker line tagged [gGEN sSLOT pPID]) or json (one JSON object a line: time, stream, pid, generation, slot, text; with --log-format json the whole output is NDJSON); lines over 16 KiB are cut and marked; a stalled reader drops lines, counted, never blocks",
		set: func(c *osadapter.Config, v string) error {
			switch v {
			case osadapter.WorkerOutputInherit, osadapter.WorkerOutputPrefix, osadapter.WorkerOutputJSON:
				c.WorkerOutput = v
				return nil
			}
			return usagef("bad --worker-output %q: use inherit, prefix or json", v)
		}},
	{long: "--tty", arg: "MODE", def: osadapter.TerminalAuto,
		help: "on: the worker is the foreground process group of the terminal on stdin, so an interactive program (a shell, a REPL) can read it and use job control; Ctrl-C and Ctrl-Z reach it, and its Ctrl-Z stops the master as a shell job; --restart defaults to no; auto: on when stdin is mworker's terminal, it runs in the foreground, with one worker, no listeners and --worker-output inherit; off: the worker is a background group and the terminal's signals reach the master",
		set: func(c *osadapter.Config, v string) error {
			switch v {
			case osadapter.TerminalAuto, osadapter.TerminalOn, osadapter.TerminalOff:
				c.Terminal = v
				return nil
			}
			return usagef("bad --tty %q: use auto, on or off", v)
		}},
	{long: "--log-level", arg: "LEVEL", def: "info",
		help: "debug, info, warn or error: the lowest level logged",
		set: func(c *osadapter.Config, v string) error {
			l, ok := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}[v]
			if !ok {
				return usagef("bad --log-level %q: use debug, info, warn or error", v)
			}
			c.LogLevel = l
			return nil
		}},
}

// defaultConfig is the configuration of "mworker run -- COMMAND".
func defaultConfig() osadapter.Config {
	return osadapter.Config{
		Machine: fsm.Config{
			Workers:      1,
			Ready:        fsm.DefaultReady,
			ReadyTimeout: 30 * time.Second,
			StopSignal:   fsm.SIGTERM,
			StopTimeout:  10 * time.Second,
			Restart:      fsm.RestartAlways,
			Backoff:      fsm.DefaultBackoff,
			Reexec:       fsm.ReexecOnUpgrade,

			MaxOldGenerations: fsm.DefaultMaxOldGenerations,
		},
		LogFormat: "text",
		Terminal:  osadapter.TerminalAuto,
	}
}

// parseRunArgs parses the arguments of "mworker run". It checks every value
// but does not look the command up. Errors are *usageError or errHelp.
func parseRunArgs(args []string) (osadapter.Config, error) {
	cfg := defaultConfig()
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		switch a {
		case "-h", "--help":
			return cfg, errHelp
		case "-sf", "-st":
			pids, n, err := parsePidList(a, args[i+1:])
			if err != nil {
				return cfg, err
			}
			if a == "-sf" {
				cfg.Machine.StopPids = append(cfg.Machine.StopPids, pids...)
			} else {
				cfg.Machine.TermPids = append(cfg.Machine.TermPids, pids...)
			}
			i += n
			continue
		}
		if !strings.HasPrefix(a, "-") {
			return cfg, usagef("unexpected %q before \"--\": write mworker run [options] -- %s", a, a)
		}
		name, value, hasValue := strings.Cut(a, "=")
		if name == "-sf" || name == "-st" {
			return cfg, usagef("%s takes pids as separate words: write %s 1234 1235", name, name)
		}
		opt := lookupOption(name)
		if opt == nil {
			return cfg, unknownOption(name)
		}
		if !hasValue {
			if i+1 >= len(args) || args[i+1] == "--" {
				return cfg, usagef("%s needs a value: write %s %s", name, name, opt.arg)
			}
			i++
			value = args[i]
		}
		if err := opt.set(&cfg, value); err != nil {
			return cfg, err
		}
	}
	if i >= len(args) {
		return cfg, usagef("missing \"--\" and command: write mworker run [options] -- COMMAND [ARG...]")
	}
	cfg.Command = args[i+1:]
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return cfg, usagef("missing command after \"--\": write mworker run [options] -- COMMAND [ARG...]")
	}
	// Only the syntax: binding is the adapter's, and a port in use is a
	// start failure (status 1), not a bad command line.
	if _, err := listen.ParseSpecs(cfg.Listen); err != nil {
		return cfg, usagef("%s", strings.TrimPrefix(err.Error(), "listen: "))
	}
	if cfg.ListenNonblocking && len(cfg.Listen) == 0 {
		return cfg, usagef("--listen-nonblocking yes without --listen: it applies to the sockets --listen binds (systemd's keep the mode of their NonBlocking=); add --listen or drop it")
	}
	// A generation that must stay up longer than it is given to become
	// ready fails every reload. With the default --ready, that is a
	// --ready-timeout of a second or less that was fine before 1s became
	// the default, so name where the duration came from.
	if r, t := cfg.Machine.Ready, cfg.Machine.ReadyTimeout; r.Kind == fsm.ReadyAfter && r.After >= t {
		what := "--ready " + r.String()
		if r == fsm.DefaultReady && !slices.ContainsFunc(args[:i], isReadyOption) {
			what += " (the default)"
		}
		return cfg, usagef("--ready-timeout %v is not longer than %s: every reload would be rolled back; use a longer --ready-timeout, a shorter --ready, or --ready notify", t, what)
	}
	if err := resolveCredential(&cfg, geteuid()); err != nil {
		return cfg, err
	}
	// A re-exec'd image (and its takeover check) keeps the first image's
	// decision, whatever its stdin.
	if cfg.Terminal == osadapter.TerminalOn && !osadapter.Resumed() {
		if err := osadapter.CheckTerminal(); err != nil {
			return cfg, usagef("--tty on: %v: run mworker from a terminal, or use --tty auto", err)
		}
	}
	// The machine checks its own configuration again; a value the parser
	// let through but the core refuses is still bad input, not a crash.
	if _, err := fsm.New(cfg.Machine); err != nil {
		return cfg, usagef("%s", trimPackage(err))
	}
	return cfg, nil
}

func lookupOption(name string) *option {
	for i := range runOptions {
		o := &runOptions[i]
		if name == o.long || (o.short != "" && name == o.short) {
			return o
		}
	}
	return nil
}

func unknownOption(name string) *usageError {
	// "-workers" for "--workers": say what was meant.
	if !strings.HasPrefix(name, "--") {
		if o := lookupOption("-" + name); o != nil {
			return usagef("unknown option %q: did you mean %s? (see mworker run --help)", name, o.long)
		}
	}
	return usagef("unknown option %q: see mworker run --help for the options", name)
}

// parsePidList reads the pids that follow -sf or -st: every word up to
// "--" or the next option. A word that looks like a negative number is
// part of the list (and refused), so that "-sf -1" cannot silently
// become an option. It returns the pids and how many words it used.
func parsePidList(flag string, words []string) ([]int, int, error) {
	var pids []int
	n := 0
	for _, w := range words {
		if w == "--" || (strings.HasPrefix(w, "-") && !looksNumeric(w[1:])) {
			break
		}
		p, err := strconv.Atoi(w)
		if err != nil || p < 1 || p > maxPid {
			return nil, 0, usagef("bad %s pid %q: use process ids from 1 to %d, e.g. %s 1234 1235", flag, w, maxPid, flag)
		}
		pids = append(pids, p)
		n++
	}
	return pids, n, nil
}

func looksNumeric(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

func parseDuration(flag, v string, dst *time.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return usagef("bad %s %q: use a positive duration such as 500ms, 10s or 1m", flag, v)
	}
	*dst = d
	return nil
}

// trimPackage drops the "fsm: " prefix of a core error: on the command
// line the message is prefixed by "mworker: " instead.
func trimPackage(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "fsm: ")
	return s
}

// isReadyOption says whether a word of the command line sets --ready.
func isReadyOption(w string) bool { return w == "--ready" || strings.HasPrefix(w, "--ready=") }
