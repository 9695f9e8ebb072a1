package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
)

// WaitArg is the argument of a stop request from `mworker stop --wait`:
// "stop wait". The master answers the stop as any other, keeps the
// connection, and writes an Exit line just before it exits. The machine
// never sees the argument: the adapter takes it off (a master older than
// --wait refuses it, as stop takes no argument, and the client says so).
const WaitArg = "wait"

// Exit is the second line a "stop wait" client gets: the master's exit
// status, written when it has nothing left to do but exit (its workers
// reaped, its sockets and pid file gone).
type Exit struct {
	Exited     bool `json:"exited"`
	ExitStatus int  `json:"exit_status"`
}

// RespondAndKeep writes the answer to r as Respond does but keeps the
// connection open, for ReportExit.
func RespondAndKeep(c *Conn, r fsm.Reply, f Facts) error {
	return c.write(NewAnswer(r, f))
}

// ReportExit writes the master's exit status to a client kept by
// RespondAndKeep, and closes the connection. The client has read the
// first answer, so the line fits in the socket's buffer and the write
// does not wait; the deadline is for a client that stopped reading with
// its buffer full, which cannot happen with mworker's own.
func ReportExit(c *Conn, status int) error {
	b, err := json.Marshal(Exit{Exited: true, ExitStatus: status})
	if err != nil {
		return err
	}
	c.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, err = c.c.Write(append(b, '\n'))
	if cerr := c.c.Close(); err == nil {
		err = cerr
	}
	return err
}

// stopAndWait is `mworker stop --wait`: it sends "stop wait", prints the
// answer as stop does, then waits for the master's Exit line and returns
// its exit status. Any failure to learn it is status 1 with the reason.
func stopAndWait(prog string, o clientOptions, spec fsm.CommandSpec, stdout, stderr io.Writer) int {
	deadline := time.Now().Add(o.timeout)
	c, err := dial(o.path, deadline)
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot connect to %s: %s; is mworker running with --control %s?\n", prog, o.path, dialReason(o.path, err), o.path)
		return 1
	}
	defer c.Close()
	c.SetDeadline(deadline)
	_, werr := io.WriteString(c, spec.Name+" "+WaitArg+"\n")
	r := bufio.NewReader(io.LimitReader(c, maxAnswer))
	first, err := r.ReadBytes('\n')
	if werr != nil && len(first) == 0 {
		fmt.Fprintf(stderr, "%s: cannot send the request to %s: %v\n", prog, o.path, werr)
		return 1
	}
	if len(strings.TrimSpace(string(first))) == 0 {
		fmt.Fprintf(stderr, "%s: %s\n", prog, waitReadError(err, "the master closed the connection without an answer (it may have exited); see its log",
			fmt.Sprintf("no answer from the master within %v: raise --timeout, or check the master's log", o.timeout)))
		return 1
	}
	var a Answer
	if err := json.Unmarshal(first, &a); err != nil {
		fmt.Fprintf(stderr, "%s: bad answer from %s (%v): is it an mworker control socket?\n", prog, o.path, err)
		return 1
	}
	if o.json {
		stdout.Write(first)
	}
	if !a.OK {
		if strings.Contains(a.Error, "takes no argument") {
			fmt.Fprintf(stderr, "%s: this master does not know --wait (it is older than this client): stop it without --wait, and wait for its pid to go\n", prog)
			return 1
		}
		fmt.Fprintf(stderr, "%s: failed: %s\n", prog, a.Error)
		return 1
	}
	if !o.json {
		fmt.Fprintln(stdout, "stopping")
	}
	last, err := r.ReadBytes('\n')
	var e Exit
	if len(strings.TrimSpace(string(last))) == 0 || json.Unmarshal(last, &e) != nil || !e.Exited {
		fmt.Fprintf(stderr, "%s: %s\n", prog, waitReadError(err, "the master closed the connection without its exit status: it was killed, or crashed; see its log",
			fmt.Sprintf("the master has not exited within %v: it may still be stopping (see mworker status); raise --timeout", o.timeout)))
		return 1
	}
	if o.json {
		stdout.Write(last)
	} else {
		fmt.Fprintf(stdout, "master exited with status %d\n", e.ExitStatus)
	}
	return e.ExitStatus
}

// waitReadError says why no line came: the deadline (timedOut), or the
// connection's end (closed).
func waitReadError(err error, closed, timedOut string) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return timedOut
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("reading from the master: %v", err)
	}
	return closed
}
