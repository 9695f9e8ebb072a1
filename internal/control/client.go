package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/mworker/mworker/fsm"
)

// Default waits for an answer. A reload waits for a whole new generation
// to become ready (--ready-timeout, 30s by default) and for the re-exec,
// so its bound is generous; it only guards against a master that hangs.
const (
	DefaultReloadTimeout = 5 * time.Minute
	DefaultTimeout       = 30 * time.Second
)

// maxAnswer bounds what the client reads: a status of 1024 workers is
// about 120 KiB.
const maxAnswer = 16 << 20

// RunClient runs `mworker CMD [ARG] --control PATH [--json] [--timeout D]`,
// CMD the Name of an entry of fsm.Commands and ARG its argument when the
// entry has an Arg (before or after the options), and returns the exit
// status: 0 success, 1 failure (the reason on stderr), 2 usage error.
func RunClient(cmd string, args []string, stdout, stderr io.Writer) int {
	prog := "mworker " + cmd
	spec, ok := fsm.LookupCommand(cmd)
	if !ok {
		fmt.Fprintf(stderr, "mworker: unknown control command %q: use %s\n", cmd, fsm.CommandList("or"))
		return 2
	}
	usage := fmt.Sprintf("usage: mworker %s --control PATH [--json] [--timeout D]", spec.Synopsis())
	timeout := DefaultTimeout
	if spec.Waits {
		timeout = DefaultReloadTimeout
	}
	fl := flag.NewFlagSet(prog, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	path := fl.String("control", "", "path of the master's control socket (mworker run --control PATH)")
	asJSON := fl.Bool("json", false, "print the answer as the JSON object")
	fl.DurationVar(&timeout, "timeout", timeout, "give up waiting for the answer after this long")
	flags, words := splitArgs(fl, args, spec.Arg != "")
	if err := fl.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v; %s\n", prog, err, usage)
		return 2
	}
	var arg string
	hasArg := spec.Arg != "" && len(words) > 0
	if hasArg {
		arg, words = words[0], words[1:]
	}
	rule := argRules[cmd]
	var bad string
	if hasArg && rule.check != nil {
		bad = rule.check(arg)
	}
	switch {
	case len(words) > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q; %s\n", prog, words[0], usage)
		return 2
	case spec.Arg != "" && !hasArg:
		fmt.Fprintf(stderr, "%s: needs %s: mworker %s --control PATH (%s)\n", prog, spec.Arg, spec.Synopsis(), rule.forms)
		return 2
	case bad != "":
		fmt.Fprintf(stderr, "%s: bad %s %q: %s\n", prog, spec.Arg, arg, bad)
		return 2
	case *path == "":
		fmt.Fprintf(stderr, "%s: --control PATH is required: the path given to mworker run --control\n", prog)
		return 2
	case timeout <= 0:
		fmt.Fprintf(stderr, "%s: --timeout %v must be positive, e.g. 5m\n", prog, timeout)
		return 2
	}

	raw, a, err := ask(*path, spec, arg, timeout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	if *asJSON {
		stdout.Write(raw)
	}
	if !a.OK {
		fmt.Fprintf(stderr, "%s: failed: %s\n", prog, a.Error)
		return 1
	}
	if *asJSON {
		return 0
	}
	switch cmd {
	case "reload":
		fmt.Fprintln(stdout, "reload succeeded")
	case "stop":
		fmt.Fprintln(stdout, "stopping")
	case "status":
		if a.Master == nil {
			fmt.Fprintf(stderr, "%s: the answer has no status: is %s an mworker control socket?\n", prog, *path)
			return 1
		}
		WriteStatus(stdout, a)
	case "scale":
		if a.Master != nil && a.Master.Size > 0 {
			fmt.Fprintf(stdout, "scaling to %s\n", workers(a.Master.Size))
		} else {
			fmt.Fprintf(stdout, "scale %s accepted\n", arg)
		}
	case "restart":
		n, _ := strconv.Atoi(arg)
		fmt.Fprintf(stdout, "slot %d restarted\n", n)
	}
	return 0
}

// argRule is how the client checks the argument of a command of
// fsm.Commands that takes one, before it sends anything: check returns
// why arg is bad, or ""; forms says what the argument may be.
type argRule struct {
	forms string
	check func(arg string) string
}

// argRules has a rule for every command of fsm.Commands with an Arg
// (TestEveryArgumentHasARule). The master judges the argument again.
var argRules = map[string]argRule{
	"scale": {
		forms: "N, +K or -K",
		check: func(arg string) string {
			const how = "give the number of workers, e.g. 4, or a change, e.g. +2 or -1"
			digits := strings.TrimLeft(arg, "+-")
			if len(arg)-len(digits) > 1 || !allDigits(digits) {
				return how
			}
			if _, err := strconv.Atoi(arg); err != nil {
				return "too large: " + how
			}
			return ""
		},
	},
	"restart": {
		forms: "a slot number, from the SLOT column of mworker status",
		check: func(arg string) string {
			const how = "give a slot number, 0 or more, from the SLOT column of mworker status, e.g. 3"
			if !allDigits(arg) {
				return how
			}
			if _, err := strconv.Atoi(arg); err != nil {
				return "too large: " + how
			}
			return ""
		},
	},
}

// allDigits says whether s is one or more ASCII decimal digits.
func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// splitArgs separates the options of fl, with their values, from the other
// words of args, wherever they are: the flag package stops at the first
// word that is not an option, and the argument of a command may come
// before the options (mworker scale 4 --control P) or after them. When
// takesArg, a word such as -1 is a word, not an option: no option of fl
// is named by digits, and scale takes negative changes. Words after "--"
// are words.
func splitArgs(fl *flag.FlagSet, args []string, takesArg bool) (flags, words []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(words, args[i+1:]...)
		case a == "-" || !strings.HasPrefix(a, "-") || takesArg && allDigits(a[1:]):
			words = append(words, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fl.Lookup(name); f != nil && !isBoolFlag(f) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, words
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func workers(n int) string {
	if n == 1 {
		return "1 worker"
	}
	return fmt.Sprintf("%d workers", n)
}

// ask sends one request, spec's name and arg if not empty, and returns the
// raw answer line and its decoding. timeout bounds the whole exchange,
// connecting included.
func ask(path string, spec fsm.CommandSpec, arg string, timeout time.Duration) ([]byte, Answer, error) {
	var a Answer
	deadline := time.Now().Add(timeout)
	c, err := dial(path, deadline)
	if err != nil {
		return nil, a, fmt.Errorf("cannot connect to %s: %s; is mworker running with --control %s?", path, dialReason(err), path)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	request := spec.Name
	if arg != "" {
		request += " " + arg
	}
	// A master that refuses us may answer and close before our write; its
	// answer is still there to read.
	_, werr := io.WriteString(c, request+"\n")
	raw, err := io.ReadAll(io.LimitReader(c, maxAnswer))
	if werr != nil && len(raw) == 0 {
		return nil, a, fmt.Errorf("cannot send the request to %s: %w", path, werr)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		what := "the master"
		if spec.Waits {
			what = "the " + spec.Name + " (it may still finish; see mworker status)"
		}
		return nil, a, fmt.Errorf("no answer from %s within %v: raise --timeout, or check the master's log", what, timeout)
	case err != nil && len(raw) == 0:
		return nil, a, fmt.Errorf("reading the answer from %s: %w", path, err)
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, a, fmt.Errorf("the master closed the connection without an answer (it may have exited, or its re-exec failed); see its log")
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, a, fmt.Errorf("bad answer from %s (%v): is it an mworker control socket?", path, err)
	}
	return append(line, '\n'), a, nil
}

// dial connects to the control socket, and connects again, after a short
// back-off, while its listen queue is full. A unix socket whose queue is
// full fails connect(2) at once with EAGAIN (it does not wait as TCP
// does): the master is alive but has not accepted for a moment, as while
// it re-executes in a storm of reloads, and it will. Any other error is
// final: ECONNREFUSED and ENOENT mean that no master listens there (the
// socket survives a re-exec, open and at its path), and waiting would only
// delay saying so.
func dial(path string, deadline time.Time) (net.Conn, error) {
	var d net.Dialer
	backoff := time.Millisecond
	for {
		d.Deadline = deadline
		c, err := d.Dial("unix", path)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Until(deadline) < backoff {
			return c, err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 50*time.Millisecond)
	}
}

func dialReason(err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such socket"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there (a stale socket file)"
	case errors.Is(err, fs.ErrPermission):
		return "permission denied (run this as the user that runs mworker)"
	case errors.Is(err, syscall.EAGAIN):
		return "its listen queue stayed full until the timeout (raise --timeout, or check the master's log)"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err.Error()
		}
		return oe.Err.Error()
	}
	return err.Error()
}

// WriteStatus prints a status answer for a person: the master's line (with
// the live workers and the desired number), then one row per worker.
func WriteStatus(w io.Writer, a Answer) {
	m := a.Master
	live := fmt.Sprintf("%d live worker", len(a.Workers))
	if len(a.Workers) != 1 {
		live += "s"
	}
	if m.Size > 0 { // an older master does not say
		live += fmt.Sprintf(" (%d desired)", m.Size)
	}
	fmt.Fprintf(w, "master pid %d, %s, generation %d, %s, %d reloads (%d failed)\n",
		m.Pid, m.State, m.Generation, live, m.Reloads, m.FailedReloads)
	if m.DroppedLogLines > 0 {
		fmt.Fprintf(w, "%d log lines dropped: stderr was not being read\n", m.DroppedLogLines)
	}
	if m.DroppedWorkerLines > 0 {
		fmt.Fprintf(w, "%d worker output lines dropped: stdout or stderr was not being read\n", m.DroppedWorkerLines)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tGEN\tSLOT\tROLE\tREADY\tUPTIME")
	for _, wk := range a.Workers {
		role := wk.Role
		if role == "" { // an older master
			role = "old"
			if wk.Current {
				role = "current"
			}
		}
		if wk.Stopping {
			role += ",stopping"
		}
		ready := "no"
		if wk.Ready {
			ready = "yes"
		}
		up := time.Duration(wk.UptimeSeconds * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%v\n", wk.Pid, wk.Generation, wk.Slot, role, ready, up)
	}
	tw.Flush()
}
