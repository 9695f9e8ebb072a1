package control

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// fakeMaster listens at a fresh path and answers every connection with
// answer (a JSON line) once it has read the request line; lines receives
// each request line exactly as the client sent it, newline included.
func fakeMaster(t *testing.T, answer string) (string, chan string) {
	t.Helper()
	path := sockPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lines := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					t.Errorf("fake master: reading the request: %v (read %q)", err, line)
					return
				}
				lines <- line
				c.Write([]byte(answer + "\n"))
			}()
		}
	}()
	return path, lines
}

// The argument of scale and restart goes on the request line after one
// space, whether it comes before or after the options; the answer is said
// in one line.
func TestClientSendsTheArgument(t *testing.T) {
	t.Parallel()
	scaled := func(size int) string {
		return fmt.Sprintf(`{"ok":true,"master":{"pid":1,"state":"running","generation":1,"size":%d},"workers":[]}`, size)
	}
	const restarted = `{"ok":true}`
	for _, tc := range []struct {
		cmd    string
		args   []string // P stands for the socket's path
		answer string
		line   string
		out    string
	}{
		{"scale", []string{"4", "--control", "P"}, scaled(4), "scale 4\n", "scaling to 4 workers\n"},
		{"scale", []string{"--control", "P", "4"}, scaled(4), "scale 4\n", "scaling to 4 workers\n"},
		{"scale", []string{"+2", "--control", "P"}, scaled(6), "scale +2\n", "scaling to 6 workers\n"},
		{"scale", []string{"--control=P", "+2"}, scaled(6), "scale +2\n", "scaling to 6 workers\n"},
		{"scale", []string{"-1", "--control", "P"}, scaled(1), "scale -1\n", "scaling to 1 worker\n"},
		{"scale", []string{"--control", "P", "-1"}, scaled(1), "scale -1\n", "scaling to 1 worker\n"},
		{"scale", []string{"--timeout", "5s", "--control", "P", "--", "-1"}, scaled(1), "scale -1\n", "scaling to 1 worker\n"},
		// An answer without the size: the client still says what it asked.
		{"scale", []string{"-1", "--control", "P"}, `{"ok":true}`, "scale -1\n", "scale -1 accepted\n"},
		{"restart", []string{"3", "--control", "P"}, restarted, "restart 3\n", "slot 3 restarted\n"},
		{"restart", []string{"--control", "P", "3"}, restarted, "restart 3\n", "slot 3 restarted\n"},
		{"restart", []string{"--control", "P", "--timeout", "1m", "0"}, restarted, "restart 0\n", "slot 0 restarted\n"},
		// --json prints the answer as it came.
		{"scale", []string{"8", "--json", "--control", "P"}, scaled(8), "scale 8\n", scaled(8) + "\n"},
	} {
		path, lines := fakeMaster(t, tc.answer)
		args := make([]string, len(tc.args))
		for i, a := range tc.args {
			switch a {
			case "P":
				a = path
			case "--control=P":
				a = "--control=" + path
			}
			args[i] = a
		}
		code, out, stderr := client(tc.cmd, args...)
		if code != 0 || out != tc.out || stderr != "" {
			t.Errorf("%s %q: exit %d, out %q, stderr %q; want exit 0 and %q", tc.cmd, tc.args, code, out, stderr, tc.out)
		}
		select {
		case line := <-lines:
			if line != tc.line {
				t.Errorf("%s %q sent %q, want %q", tc.cmd, tc.args, line, tc.line)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s %q: the fake master got no request", tc.cmd, tc.args)
		}
	}
}

// A master that refuses the argument: its reason, exit 1.
func TestClientArgumentRefusedByTheMaster(t *testing.T) {
	t.Parallel()
	path, lines := fakeMaster(t, `{"ok":false,"error":"no slot 9: the slots are 0..3"}`)
	code, out, stderr := client("restart", "9", "--control", path)
	if code != 1 || out != "" || stderr != "mworker restart: failed: no slot 9: the slots are 0..3\n" {
		t.Fatalf("exit %d, out %q, stderr %q", code, out, stderr)
	}
	if line := <-lines; line != "restart 9\n" {
		t.Fatalf("sent %q", line)
	}
}

// silentSocket is a listening socket that never accepts, and pending says
// whether a client has connected to it since the last call: a unix
// socket's connect(2) completes into the listen queue, so a client that
// connected is there to accept even after it has given up.
func silentSocket(t *testing.T) (path string, pending func() bool) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "c.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	return path, func() bool {
		nfd, _, err := unix.Accept(fd)
		if err == nil {
			unix.Close(nfd)
			return true
		}
		if !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("accept: %v", err)
		}
		return false
	}
}

// A missing or bad argument is a usage error: one line that names it and
// says what to give, exit 2, and no connection to the master.
func TestClientBadArgumentSendsNothing(t *testing.T) {
	t.Parallel()
	path, pending := silentSocket(t)
	// The check can fail: a good argument does connect (and, unanswered,
	// times out).
	if code, _, stderr := client("scale", "4", "--control", path, "--timeout", "100ms"); code != 1 || !strings.Contains(stderr, "no answer from the master within 100ms") {
		t.Fatalf("scale 4 to a master that does not answer: exit %d, stderr %q", code, stderr)
	}
	if !pending() {
		t.Fatal("scale 4 did not connect: the check below proves nothing")
	}

	for _, tc := range []struct {
		cmd  string
		args []string
		msg  string // the whole line, or a part of it when it ends with "..."
	}{
		{"scale", []string{"--control", path}, "mworker scale: needs N: mworker scale N --control PATH (N, +K or -K)"},
		{"scale", nil, "mworker scale: needs N: mworker scale N --control PATH (N, +K or -K)"},
		{"restart", []string{"--control", path}, "mworker restart: needs SLOT: mworker restart SLOT --control PATH (a slot number, from the SLOT column of mworker status)"},
		{"scale", []string{"four", "--control", path}, `mworker scale: bad N "four": give the number of workers, e.g. 4, or a change, e.g. +2 or -1`},
		{"scale", []string{"--control", path, "4.5"}, `mworker scale: bad N "4.5": ...`},
		{"scale", []string{"++2", "--control", path}, `mworker scale: bad N "++2": ...`},
		{"scale", []string{"--control", path, "+-1"}, `mworker scale: bad N "+-1": ...`},
		{"scale", []string{"0x10", "--control", path}, `mworker scale: bad N "0x10": ...`},
		{"scale", []string{"1_000", "--control", path}, `mworker scale: bad N "1_000": ...`},
		{"scale", []string{" 4", "--control", path}, `mworker scale: bad N " 4": ...`},
		{"scale", []string{"", "--control", path}, `mworker scale: bad N "": ...`},
		{"scale", []string{"+", "--control", path}, `mworker scale: bad N "+": ...`},
		{"scale", []string{"99999999999999999999", "--control", path}, `mworker scale: bad N "99999999999999999999": too large: ...`},
		{"restart", []string{"--control", path, "-1"}, `mworker restart: bad SLOT "-1": give a slot number, 0 or more, from the SLOT column of mworker status, e.g. 3`},
		{"restart", []string{"+3", "--control", path}, `mworker restart: bad SLOT "+3": ...`},
		{"restart", []string{"first", "--control", path}, `mworker restart: bad SLOT "first": ...`},
		{"restart", []string{"1.0", "--control", path}, `mworker restart: bad SLOT "1.0": ...`},
		{"scale", []string{"4", "5", "--control", path}, `mworker scale: unexpected argument "5"; usage: mworker scale N --control PATH [--json] [--timeout D]`},
		{"restart", []string{"3", "--control", path, "4"}, `mworker restart: unexpected argument "4"; usage: mworker restart SLOT --control PATH [--json] [--timeout D]`},
		{"scale", []string{"4"}, "mworker scale: no control socket: ..."},
		{"scale", []string{"4", "--control", path, "--timeout", "0s"}, `mworker scale: bad --timeout "0s": use a positive duration such as 500ms, 10s or 1m`},
		{"scale", []string{"4", "--bogus", "--control", path}, `mworker scale: unknown option "--bogus": see mworker scale --help for the options`},
		// A command without an argument still refuses one.
		{"stop", []string{"4", "--control", path}, `mworker stop: unexpected argument "4"; usage: mworker stop --control PATH [--json] [--wait] [--timeout D]`},
		{"status", []string{"--control", path, "4"}, `mworker status: unexpected argument "4"; ...`},
	} {
		code, out, stderr := client(tc.cmd, tc.args...)
		ok := stderr == tc.msg+"\n"
		if prefix, cut := strings.CutSuffix(tc.msg, "..."); cut {
			ok = strings.HasPrefix(stderr, prefix) && strings.Count(stderr, "\n") == 1 && strings.HasSuffix(stderr, "\n")
		}
		if code != 2 || out != "" || !ok {
			t.Errorf("%s %q: exit %d, out %q, stderr %q; want exit 2 and the line %q", tc.cmd, tc.args, code, out, stderr, tc.msg)
		}
		if pending() {
			t.Errorf("%s %q connected to the master", tc.cmd, tc.args)
		}
	}
}

// --help gives the usage line with the argument's placeholder (from
// fsm.Commands), what the argument may be, every option with its default
// and the exit statuses.
func TestClientHelp(t *testing.T) {
	t.Parallel()
	for _, c := range fsm.Commands {
		for _, h := range []string{"--help", "-h"} {
			code, out, stderr := client(c.Name, "4", h, "--bogus")
			if code != 0 || stderr != "" {
				t.Errorf("%s %s: exit %d, stderr %q", c.Name, h, code, stderr)
			}
			want := []string{
				"usage: mworker " + c.Synopsis() + " --control PATH [--json] ",
				"  --control PATH  ", "(default $MWORKER_CONTROL)",
				"  --json  ", "  --timeout D  ",
				"\nExit status:\n", "\n  0 ", "\n  1 ", "\n  2 ",
			}
			if c.Waits {
				want = append(want, "(default 5m0s)")
			} else {
				want = append(want, "(default 30s")
			}
			if c.Arg != "" {
				want = append(want, "\n"+c.Arg+" is "+argRules[c.Name].forms+"; it may come before or after the options.\n")
			}
			if c.Name == "stop" {
				want = append(want, " [--wait] ", "  --wait  ", "5m0s with --wait", "0..255")
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("%s %s lacks %q:\n%s", c.Name, h, w, out)
				}
			}
			if c.Name != "stop" && strings.Contains(out, "--wait") {
				t.Errorf("%s %s offers --wait, which only stop takes:\n%s", c.Name, h, out)
			}
		}
	}
}

// Every command of fsm.Commands that takes an argument has a rule for it
// in the client, which says what the argument may be.
func TestEveryArgumentHasARule(t *testing.T) {
	for _, c := range fsm.Commands {
		r, ok := argRules[c.Name]
		switch {
		case c.Arg != "" && (!ok || r.check == nil || r.forms == ""):
			t.Errorf("%s takes %s but the client has no rule for it (argRules)", c.Name, c.Arg)
		case c.Arg == "" && ok:
			t.Errorf("%s takes no argument but argRules has a rule for it", c.Name)
		}
	}
}
