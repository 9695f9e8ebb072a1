package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sockPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "c.sock")
}

// serve starts Serve on a fresh listener and returns the request channel.
func serve(t *testing.T, path string) (*Listener, chan Request) {
	t.Helper()
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make(chan Request, 16)
	served := make(chan error, 1)
	go func() { served <- l.Serve(reqs) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l, reqs
}

// client runs RunClient, in an environment without MWORKER_CONTROL, and
// returns its exit status, stdout and stderr.
func client(cmd string, args ...string) (int, string, string) {
	return clientEnv(nil, cmd, args...)
}

// clientEnv is client in the environment env.
func clientEnv(env map[string]string, cmd string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runClient(cmd, args, &out, &errb, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return code, out.String(), errb.String()
}

// rawAsk sends b on a new connection and returns the whole answer.
func rawAsk(t *testing.T, path string, b []byte) Answer {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(b) // may fail once the server has answered and closed
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var a Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("answer %q: %v", raw, err)
	}
	if n := bytes.Count(raw, []byte("\n")); n != 1 || raw[len(raw)-1] != '\n' {
		t.Fatalf("answer %q: want one JSON object and one newline", raw)
	}
	return a
}

func TestListenCreatesOwnerOnlySocket(t *testing.T) {
	old := syscall.Umask(0) // the worst umask: the file must still be 0600
	defer syscall.Umask(old)
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want a socket with 0600", fi.Mode())
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := sockPath(t)
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("setup: stale socket file missing: %v", err)
	}
	_, reqs := serve(t, path)
	go func() {
		r := <-reqs
		Respond(r.Conn, fsm.Reply{ID: r.ID, OK: true}, Facts{})
	}()
	if code, _, stderr := client("stop", "--control", path); code != 0 {
		t.Fatalf("stop over the replaced socket: exit %d: %s", code, stderr)
	}
}

func TestListenRefusesLiveSocketAndOtherFiles(t *testing.T) {
	path := sockPath(t)
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), path) {
		t.Fatalf("Listen on a live socket: %v, want an error naming %s as in use", err, path)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the live socket's file was removed: %v", err)
	}

	file := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(file, []byte("x"), 0o644)
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen on a regular file: %v, want 'not a socket'", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Fatal("the regular file was touched")
	}
	long := "/" + strings.Repeat("x", 120)
	if _, err := Listen(long); err == nil || !strings.Contains(err.Error(), "shorter path") {
		t.Fatalf("Listen on a long path: %v", err)
	}
}

func TestCloseRemovesOnlyItsOwnSocket(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("Close left %s behind: %v", path, err)
	}

	l, err = Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// Someone replaces the file (another master after ours was removed).
	os.Remove(path)
	other, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Close removed a socket it did not create: %v", err)
	}
}

func TestRequestsRoundTrip(t *testing.T) {
	path := sockPath(t)
	_, reqs := serve(t, path)
	status := &fsm.Status{State: "running", Generation: 3, Size: 1, Reloads: 2, FailedReloads: 1, Workers: []fsm.WorkerStatus{
		{Pid: 101, Generation: 3, Slot: 0, Current: true, Ready: true},
		{Pid: 99, Generation: 2, Slot: 0, Stopping: true, Ready: true},
	}}
	facts := Facts{MasterPid: 42, Uptime: map[int]time.Duration{101: 61500 * time.Millisecond, 99: time.Hour}}
	var lastID fsm.RequestID
	// answer plays the event loop for one request.
	answer := func(want fsm.Command, reply fsm.Reply) {
		t.Helper()
		go func() {
			r := <-reqs
			if r.Command != want {
				t.Errorf("loop got %v, want %v", r.Command, want)
			}
			if r.ID <= lastID {
				t.Errorf("request id %d not above the last one %d", r.ID, lastID)
			}
			lastID = r.ID
			reply.ID = r.ID
			if err := Respond(r.Conn, reply, facts); err != nil {
				t.Errorf("Respond: %v", err)
			}
		}()
	}

	answer(fsm.CmdReload, fsm.Reply{OK: true})
	if code, out, stderr := client("reload", "--control", path); code != 0 || out != "reload succeeded\n" {
		t.Fatalf("reload: exit %d, out %q, err %q", code, out, stderr)
	}

	answer(fsm.CmdReload, fsm.Reply{Error: "worker 7 (slot 0 of generation 4) exited with exit:1 before the generation was ready"})
	if code, _, stderr := client("reload", "--control", path); code != 1 || stderr != "mworker reload: failed: worker 7 (slot 0 of generation 4) exited with exit:1 before the generation was ready\n" {
		t.Fatalf("failed reload: exit %d, stderr %q", code, stderr)
	}

	answer(fsm.CmdReload, fsm.Reply{Error: "cannot reload: mworker is stopping"})
	if code, out, stderr := client("reload", "--control", path, "--json"); code != 1 ||
		out != `{"ok":false,"error":"cannot reload: mworker is stopping"}`+"\n" || stderr != "mworker reload: failed: cannot reload: mworker is stopping\n" {
		t.Fatalf("failed reload --json: exit %d, out %q, stderr %q", code, out, stderr)
	}

	// What the master says is said once: not "failed: reload failed: ...".
	for _, tc := range []struct {
		reply fsm.Reply
		want  string
	}{
		{fsm.Reply{Error: "reload failed: generation 3 was not ready within 30s",
			Reload: &fsm.ReloadOutcome{Seq: 2, Result: fsm.ReloadFailure, Reason: "generation 3 was not ready within 30s", Generation: 3, Previous: 2}},
			"mworker reload: failed: generation 3 was not ready within 30s\n"},
		{fsm.Reply{Error: "reload failed: cannot execute /usr/bin/mworker: permission denied"}, // without the outcome: an older master
			"mworker reload: failed: cannot execute /usr/bin/mworker: permission denied\n"},
		{fsm.Reply{Error: "reload aborted: mworker is stopping (TERM)",
			Reload: &fsm.ReloadOutcome{Result: fsm.ReloadAborted, Reason: "mworker is stopping (TERM)", Generation: 3, Previous: 2}},
			"mworker reload: aborted: mworker is stopping (TERM)\n"},
	} {
		answer(fsm.CmdReload, tc.reply)
		if code, _, stderr := client("reload", "--control", path); code != 1 || stderr != tc.want {
			t.Errorf("reload answered %q: exit %d, stderr %q, want %q", tc.reply.Error, code, stderr, tc.want)
		}
	}

	// A success says which generation, how fast, which pids, and what stops.
	answer(fsm.CmdReload, fsm.Reply{OK: true, Reload: &fsm.ReloadOutcome{Seq: 3, Result: fsm.ReloadSuccess, Trigger: "control client pid 9",
		Generation: 4, Previous: 3, Pids: []int{101, 102}, Old: []int{91, 92}}})
	if code, out, stderr := client("reload", "--control", path); code != 0 || !regexp.MustCompile(`^generation 4 ready in \d+ ms \(pids 101 102\); generation 3 stopping\n$`).MatchString(out) {
		t.Errorf("reload: exit %d, out %q, err %q", code, out, stderr)
	}

	answer(fsm.CmdStop, fsm.Reply{OK: true})
	if code, out, stderr := client("stop", "--control", path); code != 0 || out != "stopping\n" {
		t.Fatalf("stop: exit %d, out %q, err %q", code, out, stderr)
	}

	answer(fsm.CmdStatus, fsm.Reply{OK: true, Status: status})
	code, out, stderr := client("status", "--control", path)
	want := "master pid 42, running, generation 3, 2 live workers (1 desired), 2 reloads (1 failed)\n" +
		"PID  GEN  SLOT  ROLE          READY  UPTIME\n" +
		"101  3    0     current       yes    1m2s\n" +
		"99   2    0     old,stopping  yes    1h0m0s\n"
	if code != 0 || out != want {
		t.Fatalf("status: exit %d, err %q, out:\n%s\nwant:\n%s", code, stderr, out, want)
	}

	answer(fsm.CmdStatus, fsm.Reply{OK: true, Status: status})
	code, out, stderr = client("status", "--control", path, "--json")
	wantJSON := `{"ok":true,"master":{"pid":42,"state":"running","generation":3,"size":1,"reloads":2,"failed_reloads":1,"dropped_log_lines":0,"dropped_worker_lines":0,"goroutines":0,` +
		`"version":"","start_time":"","uptime_seconds":0,"listeners":[],"reload_queued":false,"slots":[]},` +
		`"workers":[{"pid":101,"generation":3,"slot":0,"current":true,"role":"current","ready":true,"stopping":false,"uptime_seconds":61.5},` +
		`{"pid":99,"generation":2,"slot":0,"current":false,"role":"old","ready":true,"stopping":true,"uptime_seconds":3600}]}` + "\n"
	if code != 0 || out != wantJSON {
		t.Fatalf("status --json: exit %d, err %q, out:\n%s\nwant:\n%s", code, stderr, out, wantJSON)
	}
}

// Dropped log lines are in the answer, and in the table only when there
// are some.
func TestStatusShowsDroppedLogLines(t *testing.T) {
	a := NewAnswer(fsm.Reply{OK: true, Status: &fsm.Status{State: "running", Generation: 1}}, Facts{MasterPid: 7, DroppedLogLines: 12, Goroutines: 9})
	if a.Master.Goroutines != 9 {
		t.Errorf("goroutines %d, want 9", a.Master.Goroutines)
	}
	if a.Master.DroppedLogLines != 12 {
		t.Fatalf("dropped_log_lines %d, want 12", a.Master.DroppedLogLines)
	}
	var b strings.Builder
	WriteStatus(&b, a)
	want := "master pid 7, running, generation 1, 0 live workers, 0 reloads (0 failed)\n" +
		"12 log lines dropped: stderr was not being read\n" +
		"PID  GEN  SLOT  ROLE  READY  UPTIME\n"
	if b.String() != want {
		t.Fatalf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}

// Dropped worker lines likewise, in the table only when there are some.
func TestStatusShowsDroppedWorkerLines(t *testing.T) {
	a := NewAnswer(fsm.Reply{OK: true, Status: &fsm.Status{State: "running", Generation: 1}}, Facts{MasterPid: 7, DroppedWorkerLines: 5})
	if a.Master.DroppedWorkerLines != 5 {
		t.Fatalf("dropped_worker_lines %d, want 5", a.Master.DroppedWorkerLines)
	}
	var b strings.Builder
	WriteStatus(&b, a)
	want := "master pid 7, running, generation 1, 0 live workers, 0 reloads (0 failed)\n" +
		"5 worker output lines dropped: stdout or stderr was not being read\n" +
		"PID  GEN  SLOT  ROLE  READY  UPTIME\n"
	if b.String() != want {
		t.Fatalf("status:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestStatusWithoutWorkersKeepsTheList(t *testing.T) {
	b, _ := json.Marshal(NewAnswer(fsm.Reply{OK: true, Status: &fsm.Status{State: "exiting"}}, Facts{MasterPid: 1}))
	if want := `{"ok":true,"master":{"pid":1,"state":"exiting","generation":0,"size":0,"reloads":0,"failed_reloads":0,"dropped_log_lines":0,"dropped_worker_lines":0,"goroutines":0,` +
		`"version":"","start_time":"","uptime_seconds":0,"listeners":[],"reload_queued":false,"slots":[]},"workers":[]}`; string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(NewAnswer(fsm.Reply{}, Facts{}))
	if want := `{"ok":false,"error":"failed (no reason given; see the master's log)"}`; string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
}

func TestBadRequestsAreAnsweredAndServingGoesOn(t *testing.T) {
	path := sockPath(t)
	_, reqs := serve(t, path)

	a := rawAsk(t, path, []byte("bogus\n"))
	if a.OK || !strings.Contains(a.Error, `unknown request "bogus"`) {
		t.Fatalf("unknown request: %+v", a)
	}
	a = rawAsk(t, path, bytes.Repeat([]byte("a"), 3*MaxRequest))
	if a.OK || !strings.Contains(a.Error, "longer than 4096 bytes") {
		t.Fatalf("oversized request: %+v", a)
	}
	// A line that just fits is read in full, and its end need not be a newline.
	a = rawAsk(t, path, []byte(strings.Repeat(" ", MaxRequest-len("x\n"))+"x\n"))
	if a.OK || !strings.Contains(a.Error, `unknown request "x"`) {
		t.Fatalf("request of MaxRequest bytes: %+v", a)
	}
	if len(reqs) != 0 {
		t.Fatalf("a bad request reached the loop: %+v", <-reqs)
	}

	go func() {
		r := <-reqs
		Respond(r.Conn, fsm.Reply{ID: r.ID, OK: true, Status: &fsm.Status{State: "running", Generation: 1}}, Facts{MasterPid: 7})
	}()
	if code, out, stderr := client("status", "--control", path); code != 0 || !strings.HasPrefix(out, "master pid 7, running, generation 1") {
		t.Fatalf("status after bad requests: exit %d, out %q, err %q", code, out, stderr)
	}
}

func TestRequestWithoutNewlineIsRead(t *testing.T) {
	path := sockPath(t)
	_, reqs := serve(t, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("reload"))
	c.(*net.UnixConn).CloseWrite()
	select {
	case r := <-reqs:
		if r.Command != fsm.CmdReload {
			t.Fatalf("got %v", r.Command)
		}
		r.Conn.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("no request")
	}
}

func TestPeerOfAnotherUIDIsRefused(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.uid = os.Geteuid() + 1 // so that this process is the foreign peer
	reqs := make(chan Request, 1)
	go l.Serve(reqs)
	code, _, stderr := client("reload", "--control", path)
	if code != 1 || !strings.Contains(stderr, "permission denied: your uid") {
		t.Fatalf("foreign peer: exit %d, stderr %q", code, stderr)
	}
	if len(reqs) != 0 {
		t.Fatal("a foreign peer's request reached the loop")
	}
}

func TestClientUsageAndConnectErrors(t *testing.T) {
	stale := sockPath(t)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	missing := filepath.Join(t.TempDir(), "none.sock")
	regular := filepath.Join(t.TempDir(), "app.pid")
	if err := os.WriteFile(regular, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmd  string
		args []string
		code int
		msg  string
	}{
		{"status", nil, 2, "mworker status: no control socket: give --control PATH (the path given to mworker run --control) or set MWORKER_CONTROL"},
		{"reload", []string{"--control", missing, "now"}, 2, `unexpected argument "now"`},
		{"stop", []string{"--bogus"}, 2, `mworker stop: unknown option "--bogus": see mworker stop --help for the options`},
		{"bogus", nil, 2, `unknown control command "bogus": use ` + fsm.CommandList("or")},
		{"reload", []string{"--control", missing, "--timeout", "0s"}, 2, `bad --timeout "0s": use a positive duration`},
		{"status", []string{"--control", missing}, 1, "cannot connect to " + missing + ": no such socket; is mworker running with --control " + missing + "?"},
		{"reload", []string{"--control", stale}, 1, "nothing listens there"},
		// connect(2) refuses a regular file as it refuses a stale socket.
		{"status", []string{"--control", regular}, 1, "cannot connect to " + regular + ": it is not a socket but a regular file: give the path given to mworker run --control"},
	} {
		code, out, stderr := client(tc.cmd, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.msg) || strings.Count(stderr, "\n") != 1 || out != "" {
			t.Errorf("%s %q: exit %d, out %q, stderr %q; want exit %d and one line with %q", tc.cmd, tc.args, code, out, stderr, tc.code, tc.msg)
		}
	}
}

func TestClientReportsNoAnswer(t *testing.T) {
	path := sockPath(t)
	_, reqs := serve(t, path)

	held := make(chan Request, 1)
	go func() { held <- <-reqs }()
	code, _, stderr := client("reload", "--control", path, "--timeout", "200ms")
	if code != 1 || !strings.Contains(stderr, "no answer from the reload (it may still finish; see mworker status) within 200ms") {
		t.Fatalf("timeout: exit %d, stderr %q", code, stderr)
	}
	(<-held).Conn.Close()

	go func() { (<-reqs).Conn.Close() }() // the loop drops it, as a failed exec would
	code, _, stderr = client("reload", "--control", path)
	if code != 1 || !strings.Contains(stderr, "closed the connection without an answer") {
		t.Fatalf("dropped: exit %d, stderr %q", code, stderr)
	}
}

// A client that meets a full listen queue (EAGAIN at once on a unix
// socket) connects again within its --timeout, and gets its answer once
// the master accepts.
func TestClientRetriesAFullQueue(t *testing.T) {
	path := sockPath(t)
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	fl, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	ln := fl.(*net.UnixListener)
	defer ln.Close()
	// Fill the queue until a connect fails with EAGAIN.
	var filler []net.Conn
	defer func() {
		for _, c := range filler {
			c.Close()
		}
	}()
	for {
		c, err := net.Dial("unix", path)
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil || len(filler) > 100 {
			t.Fatalf("filling the queue: %v after %d clients", err, len(filler))
		}
		filler = append(filler, c)
	}
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errText := client("reload", "--control", path, "--timeout", "20s")
		done <- result{code, out, errText}
	}()
	// Without a retry the client fails at once: give it time to meet the
	// full queue before the master accepts.
	select {
	case r := <-done:
		t.Fatalf("the client gave up on a full queue: exit %d, stderr %q", r.code, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _, _ := readRequest(c, nil)
				if line == "reload" {
					c.Write([]byte("{\"ok\":true}\n"))
				}
			}()
		}
	}()
	select {
	case r := <-done:
		if r.code != 0 || r.out != "reload succeeded\n" {
			t.Fatalf("exit %d, out %q, stderr %q", r.code, r.out, r.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no answer")
	}
}

// BenchmarkStatusRoundTrip is one client connection: connect, peer check,
// request line, a status of 8 workers as JSON, close.
func BenchmarkStatusRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "c.sock")
	l, err := Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	reqs := make(chan Request)
	go l.Serve(reqs)
	st := &fsm.Status{State: "running", Generation: 1}
	for i := range 8 {
		st.Workers = append(st.Workers, fsm.WorkerStatus{Pid: 100 + i, Generation: 1, Slot: i, Current: true, Ready: true})
	}
	go func() {
		for r := range reqs {
			Respond(r.Conn, fsm.Reply{ID: r.ID, OK: true, Status: st}, Facts{MasterPid: 1})
		}
	}()
	for b.Loop() {
		if _, a, err := ask(path, fsm.CommandSpec{Name: "status"}, "", time.Minute); err != nil || len(a.Workers) != 8 {
			b.Fatalf("%v %+v", err, a)
		}
	}
}
