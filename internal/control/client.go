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

// RunClient runs `mworker CMD --control PATH [--json] [--timeout D]`, CMD
// the Name of an entry of fsm.Commands, and returns the exit status: 0
// success, 1 failure (the reason on stderr), 2 usage error.
func RunClient(cmd string, args []string, stdout, stderr io.Writer) int {
	prog := "mworker " + cmd
	usage := fmt.Sprintf("usage: mworker %s --control PATH [--json] [--timeout D]", cmd)
	spec, ok := fsm.LookupCommand(cmd)
	if !ok {
		fmt.Fprintf(stderr, "mworker: unknown control command %q: use %s\n", cmd, fsm.CommandList("or"))
		return 2
	}
	timeout := DefaultTimeout
	if spec.Waits {
		timeout = DefaultReloadTimeout
	}
	fl := flag.NewFlagSet(prog, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	path := fl.String("control", "", "path of the master's control socket (mworker run --control PATH)")
	asJSON := fl.Bool("json", false, "print the answer as the JSON object")
	fl.DurationVar(&timeout, "timeout", timeout, "give up waiting for the answer after this long")
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "%s: %v; %s\n", prog, err, usage)
		return 2
	}
	switch {
	case fl.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q; %s\n", prog, fl.Arg(0), usage)
		return 2
	case *path == "":
		fmt.Fprintf(stderr, "%s: --control PATH is required: the path given to mworker run --control\n", prog)
		return 2
	case timeout <= 0:
		fmt.Fprintf(stderr, "%s: --timeout %v must be positive, e.g. 5m\n", prog, timeout)
		return 2
	}

	raw, a, err := ask(*path, cmd, timeout)
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
	}
	return 0
}

// ask sends one request and returns the raw answer line and its decoding.
// timeout bounds the whole exchange, connecting included.
func ask(path, cmd string, timeout time.Duration) ([]byte, Answer, error) {
	var a Answer
	deadline := time.Now().Add(timeout)
	c, err := dial(path, deadline)
	if err != nil {
		return nil, a, fmt.Errorf("cannot connect to %s: %s; is mworker running with --control %s?", path, dialReason(err), path)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	// A master that refuses us may answer and close before our write; its
	// answer is still there to read.
	_, werr := io.WriteString(c, cmd+"\n")
	raw, err := io.ReadAll(io.LimitReader(c, maxAnswer))
	if werr != nil && len(raw) == 0 {
		return nil, a, fmt.Errorf("cannot send the request to %s: %w", path, werr)
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		what := "the master"
		if cmd == "reload" {
			what = "the reload (it may still finish; see mworker status)"
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

// WriteStatus prints a status answer for a person: the master's line, then
// one row per worker.
func WriteStatus(w io.Writer, a Answer) {
	m := a.Master
	fmt.Fprintf(w, "master pid %d, %s, generation %d, %d reloads (%d failed)\n",
		m.Pid, m.State, m.Generation, m.Reloads, m.FailedReloads)
	if m.DroppedLogLines > 0 {
		fmt.Fprintf(w, "%d log lines dropped: stderr was not being read\n", m.DroppedLogLines)
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
