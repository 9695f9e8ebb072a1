package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"slices"
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

// RunClient runs `mworker CMD [ARG] [--control PATH] [--json] [--timeout D]`
// (and stop's [--wait]), --control defaulting to $MWORKER_CONTROL,
// CMD the Name of an entry of fsm.Commands and ARG its argument when the
// entry has an Arg (before or after the options), and returns the exit
// status: 0 success, 1 failure (the reason on stderr), 2 usage error.
func RunClient(cmd string, args []string, stdout, stderr io.Writer) int {
	return runClient(cmd, args, stdout, stderr, os.LookupEnv)
}

// runClient is RunClient with the environment read through lookupEnv.
func runClient(cmd string, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	prog := "mworker " + cmd
	spec, ok := fsm.LookupCommand(cmd)
	if !ok {
		fmt.Fprintf(stderr, "mworker: unknown control command %q: use %s\n", cmd, fsm.CommandList("or"))
		return 2
	}
	o, err := parseClientArgs(spec, args, lookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 2
	}
	if o.help {
		fmt.Fprint(stdout, clientHelp(spec))
		return 0
	}
	if o.wait {
		return stopAndWait(prog, o, spec, stdout, stderr)
	}
	path, asJSON, arg := &o.path, &o.json, o.arg // as the flag package gave them
	raw, a, err := ask(o.path, spec, arg, o.timeout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return 1
	}
	if *asJSON {
		stdout.Write(raw)
	}
	if !a.OK {
		fmt.Fprintf(stderr, "%s: %s\n", prog, failureText(cmd, a))
		return 1
	}
	if *asJSON {
		return 0
	}
	switch cmd {
	case "reload":
		fmt.Fprintln(stdout, ReloadText(a.Reload))
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

// failureText says why a request failed, once: "failed: REASON" or
// "aborted: REASON" for a reload, the master's words otherwise, without
// repeating the command ("reload failed: ..." is not prefixed again).
func failureText(cmd string, a Answer) string {
	if r := a.Reload; r != nil && r.Reason != "" {
		word := "failed"
		if r.Result == "aborted" {
			word = "aborted"
		}
		return word + ": " + r.Reason
	}
	msg := a.Error
	if rest, ok := strings.CutPrefix(msg, cmd+" "); ok && (strings.HasPrefix(rest, "failed: ") || strings.HasPrefix(rest, "aborted: ")) {
		return rest
	}
	if strings.HasPrefix(msg, cmd+" ") {
		return msg
	}
	return "failed: " + msg
}

// ReloadText is what mworker reload prints on success: "generation 4
// ready in 230 ms (pids 101 102); generation 3 stopping".
func ReloadText(r *Reload) string {
	if r == nil { // an older master
		return "reload succeeded"
	}
	s := fmt.Sprintf("generation %d ready in %s", r.Generation, humanSeconds(r.DurationSeconds))
	if len(r.Pids) > 0 {
		s += " (" + plural(len(r.Pids), "pid", "pids") + " " + joinInts(r.Pids) + ")"
	}
	if r.Previous > 0 && len(r.OldPids) > 0 {
		s += fmt.Sprintf("; generation %d stopping", r.Previous)
	}
	return s
}

// humanSeconds writes a duration given in seconds as a person reads it:
// "230 ms" under 10 s, "12.3 s" under a minute, else Go's form (2m5s).
func humanSeconds(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < 10*time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func joinInts(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, " ")
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
		return nil, a, fmt.Errorf("cannot connect to %s: %s; is mworker running with --control %s?", path, dialReason(path, err), path)
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

func dialReason(path string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no such socket"
	case errors.Is(err, syscall.ECONNREFUSED):
		// connect(2) says the same of a file that is no socket at all.
		if fi, serr := os.Stat(path); serr == nil && fi.Mode().Type() != fs.ModeSocket {
			return "it is not a socket but a " + fileKind(fi.Mode()) + ": give the path given to mworker run --control"
		}
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

// fileKind names the type of a file that is not a socket.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "file of another kind"
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
	if m.Version != "" { // an older master does not say
		fmt.Fprintf(w, "mworker %s, started %s, up %v\n", m.Version, m.StartTime,
			time.Duration(m.UptimeSeconds*float64(time.Second)).Round(time.Second))
	}
	if len(m.Listeners) > 0 {
		parts := make([]string, len(m.Listeners))
		for i, l := range m.Listeners {
			parts[i] = fmt.Sprintf("%s=%s (fd %d)", l.Name, l.Address, l.Fd)
		}
		fmt.Fprintf(w, "listeners: %s\n", strings.Join(parts, ", "))
	}
	if m.Reloading != "" {
		fmt.Fprintf(w, "reloading (%s)\n", m.Reloading)
	}
	if m.ReloadQueued {
		fmt.Fprintln(w, "a reload is queued: it starts once the one under way is over")
	}
	if r := m.LastReload; r != nil {
		fmt.Fprintf(w, "last reload: %s\n", lastReloadText(r))
	}
	for _, sl := range m.Slots {
		if sl.Restarts == 0 && sl.Failures == 0 && !sl.RestartPending {
			continue
		}
		line := fmt.Sprintf("slot %d: %d %s", sl.Slot, sl.Restarts, plural(sl.Restarts, "restart", "restarts"))
		if sl.Failures > 0 {
			line += fmt.Sprintf(", %d failed in a row, backoff %v", sl.Failures, time.Duration(sl.BackoffSeconds*float64(time.Second)))
		}
		if sl.RestartPending {
			line += ", restart pending"
		}
		fmt.Fprintln(w, line)
	}
	if m.DroppedLogLines > 0 {
		fmt.Fprintf(w, "%d log lines dropped: stderr was not being read\n", m.DroppedLogLines)
	}
	if m.DroppedWorkerLines > 0 {
		fmt.Fprintf(w, "%d worker output lines dropped: stdout or stderr was not being read\n", m.DroppedWorkerLines)
	}
	// STATUS, the workers' STATUS= texts, only when one has sent any.
	texts := slices.ContainsFunc(a.Workers, func(wk Worker) bool { return wk.StatusText != "" })
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if texts {
		fmt.Fprintln(tw, "PID\tGEN\tSLOT\tROLE\tREADY\tUPTIME\tSTATUS")
	} else {
		fmt.Fprintln(tw, "PID\tGEN\tSLOT\tROLE\tREADY\tUPTIME")
	}
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
		if texts {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%v\t%s\n", wk.Pid, wk.Generation, wk.Slot, role, ready, up, oneLine(wk.StatusText))
		} else {
			fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%v\n", wk.Pid, wk.Generation, wk.Slot, role, ready, up)
		}
	}
	tw.Flush()
}

// lastReloadText is the status line of the last reload: "#3 success
// (SIGHUP) at TIME in 230 ms: generation 4 ready" or "#3 failure
// (control client pid 77) at TIME after 30.0 s: REASON".
func lastReloadText(r *Reload) string {
	s := fmt.Sprintf("#%d %s (%s)", r.Seq, r.Result, r.Trigger)
	if r.Time != "" {
		s += " at " + r.Time
	}
	if r.Result == "success" {
		return s + fmt.Sprintf(" in %s: generation %d ready", humanSeconds(r.DurationSeconds), r.Generation)
	}
	return s + fmt.Sprintf(" after %s: %s", humanSeconds(r.DurationSeconds), r.Reason)
}

// oneLine keeps a worker's STATUS= text to one table cell: its first
// line, at most 60 characters.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > 60 {
		s = string(r[:59]) + "…"
	}
	return s
}
