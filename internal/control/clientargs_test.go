package control

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

// MWORKER_CONTROL is the default --control of every client command, and
// --control wins over it.
func TestClientControlFromEnvironment(t *testing.T) {
	t.Parallel()
	const status = `{"ok":true,"master":{"pid":1,"state":"running","generation":1,"size":1},"workers":[]}`
	fromEnv, envLines := fakeMaster(t, status)
	fromFlag, flagLines := fakeMaster(t, status)
	env := map[string]string{EnvControl: fromEnv}
	for _, cmd := range []string{"reload", "status", "stop", "scale", "restart"} {
		args := []string{}
		if cmd == "scale" || cmd == "restart" {
			args = append(args, "1")
		}
		if code, _, stderr := clientEnv(env, cmd, args...); code != 0 {
			t.Errorf("%s with %s set: exit %d, stderr %q", cmd, EnvControl, code, stderr)
		}
		if line := <-envLines; !strings.HasPrefix(line, cmd) {
			t.Errorf("%s sent %q to $%s", cmd, line, EnvControl)
		}
		if code, _, stderr := clientEnv(env, cmd, append(args, "--control", fromFlag)...); code != 0 {
			t.Errorf("%s --control with %s set: exit %d, stderr %q", cmd, EnvControl, code, stderr)
		}
		select {
		case line := <-flagLines:
			if !strings.HasPrefix(line, cmd) {
				t.Errorf("%s sent %q to --control", cmd, line)
			}
		case line := <-envLines:
			t.Errorf("%s --control sent %q to $%s instead", cmd, line, EnvControl)
		}
	}
	// Set but empty is as unset: the error names both ways.
	code, _, stderr := clientEnv(map[string]string{EnvControl: ""}, "status")
	if code != 2 || stderr != "mworker status: no control socket: give --control PATH (the path given to mworker run --control) or set MWORKER_CONTROL\n" {
		t.Errorf("status with an empty %s: exit %d, stderr %q", EnvControl, code, stderr)
	}
}

// The client commands parse their options as mworker run does, and say
// what is wrong in its words.
func TestClientOptionErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cmd  string
		args []string
		msg  string
	}{
		{"reload", []string{"--bogus", "--control", "P"}, `mworker reload: unknown option "--bogus": see mworker reload --help for the options`},
		{"reload", []string{"--bogus=1"}, `mworker reload: unknown option "--bogus": see mworker reload --help for the options`},
		{"reload", []string{"-control", "P"}, `mworker reload: unknown option "-control": did you mean --control? (see mworker reload --help)`},
		{"status", []string{"-json", "--control", "P"}, `mworker status: unknown option "-json": did you mean --json? (see mworker status --help)`},
		{"reload", []string{"--wait", "--control", "P"}, `mworker reload: unknown option "--wait": see mworker reload --help for the options`},
		{"status", []string{"--json=true", "--control", "P"}, `mworker status: --json takes no value: write --json alone`},
		{"stop", []string{"--control", "P", "--wait=yes"}, `mworker stop: --wait takes no value: write --wait alone`},
		{"reload", []string{"--control", "P", "--timeout"}, `mworker reload: --timeout needs a value: write --timeout D`},
		{"reload", []string{"--control"}, `mworker reload: --control needs a value: write --control PATH`},
		{"reload", []string{"--control="}, `mworker reload: empty --control: give the path given to mworker run --control, such as /run/app.sock`},
		{"reload", []string{"--control", "P", "--timeout", "x"}, `mworker reload: bad --timeout "x": use a positive duration such as 500ms, 10s or 1m`},
		{"reload", []string{"--control", "P", "--timeout=-1s"}, `mworker reload: bad --timeout "-1s": use a positive duration such as 500ms, 10s or 1m`},
		{"reload", []string{"--control", "P", "--", "now"}, `mworker reload: unexpected argument "now"; usage: mworker reload --control PATH [--json] [--timeout D]`},
	} {
		code, out, stderr := client(tc.cmd, tc.args...)
		if code != 2 || out != "" || stderr != tc.msg+"\n" {
			t.Errorf("%s %q: exit %d, out %q, stderr %q; want exit 2 and %q", tc.cmd, tc.args, code, out, stderr, tc.msg)
		}
	}
}

// stopMaster answers "stop wait" with first and then, unless last is "",
// with last, and returns the socket's path and the request lines.
func stopMaster(t *testing.T, first, last string) (string, chan string) {
	t.Helper()
	path := sockPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	lines := make(chan string, 4)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		lines <- line
		c.Write([]byte(first + "\n"))
		if last != "" {
			c.Write([]byte(last + "\n"))
		}
	}()
	return path, lines
}

// stop --wait sends "stop wait", says "stopping", and exits with the
// status the master reports at its exit; without it, nothing to report
// is a failure.
func TestStopWait(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		first, last string
		json        bool
		code        int
		out, stderr string
	}{
		{`{"ok":true}`, `{"exited":true,"exit_status":7}`, false, 7, "stopping\nmaster exited with status 7\n", ""},
		{`{"ok":true}`, `{"exited":true,"exit_status":0}`, false, 0, "stopping\nmaster exited with status 0\n", ""},
		{`{"ok":true}`, `{"exited":true,"exit_status":143}`, true, 143, "{\"ok\":true}\n{\"exited\":true,\"exit_status\":143}\n", ""},
		{`{"ok":true}`, "", false, 1, "stopping\n", "mworker stop: the master closed the connection without its exit status: it was killed, or crashed; see its log\n"},
		{`{"ok":false,"error":"stop takes no argument, got \"wait\": send stop alone"}`, "", false, 1, "",
			"mworker stop: this master does not know --wait (it is older than this client): stop it without --wait, and wait for its pid to go\n"},
		{`{"ok":false,"error":"no"}`, "", false, 1, "", "mworker stop: failed: no\n"},
	} {
		path, lines := stopMaster(t, tc.first, tc.last)
		args := []string{"--wait", "--control", path}
		if tc.json {
			args = append(args, "--json")
		}
		code, out, stderr := client("stop", args...)
		if code != tc.code || out != tc.out || stderr != tc.stderr {
			t.Errorf("answers %s, %s: exit %d, out %q, stderr %q; want exit %d, out %q, stderr %q", tc.first, tc.last, code, out, stderr, tc.code, tc.out, tc.stderr)
		}
		if line := <-lines; line != "stop wait\n" {
			t.Errorf("stop --wait sent %q, want %q", line, "stop wait\n")
		}
	}
}

// A master that answers the stop but has not exited by --timeout: the
// client says so and fails.
func TestStopWaitTimeout(t *testing.T) {
	t.Parallel()
	path := sockPath(t)
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conns := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(conns)
			return
		}
		bufio.NewReader(c).ReadString('\n')
		c.Write([]byte(`{"ok":true}` + "\n"))
		conns <- c // and never exits: open until the client has given up
	}()
	code, out, stderr := client("stop", "--wait", "--control", path, "--timeout", "200ms")
	if c, ok := <-conns; ok {
		c.Close()
	}
	if code != 1 || out != "stopping\n" || stderr != "mworker stop: the master has not exited within 200ms: it may still be stopping (see mworker status); raise --timeout\n" {
		t.Errorf("exit %d, out %q, stderr %q", code, out, stderr)
	}
}
