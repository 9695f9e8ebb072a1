package control

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"

	"github.com/mworker/mworker/internal/e2etest"
)

// The exec test runs this test binary as a small master: phase "before"
// takes a reload request (waiting for its outcome), a status request
// (read, not yet given to the machine) and a client that has sent part of
// its line, pauses and re-execs itself with the handoff; phase "after"
// answers the first two from the new image, reads the third client's line
// to the end and answers it, then one more.
const (
	envPhase = "CONTROL_TEST_PHASE"
	envSock  = "CONTROL_TEST_SOCK"
)

func TestMain(m *testing.M) {
	switch os.Getenv(envPhase) {
	case "before":
		os.Exit(phaseBefore(os.Getenv(envSock)))
	case "after":
		os.Exit(phaseAfter(os.Getenv(envSock)))
	}
	os.Exit(m.Run())
}

func phaseBefore(path string) int {
	l, pending, err := Open(path)
	if err != nil || len(pending) != 0 {
		fmt.Fprintf(os.Stderr, "before: Open: %v, pending %v\n", err, pending)
		return 3
	}
	reqs := make(chan Request)
	go l.Serve(reqs)
	pending = map[fsm.RequestID]*Conn{}
	var queued []Request
	for range 2 {
		r := <-reqs
		if r.Command == fsm.CmdReload {
			pending[r.ID] = r.Conn
		} else {
			queued = append(queued, r)
		}
	}
	if len(pending) != 1 || len(queued) != 1 {
		fmt.Fprintf(os.Stderr, "before: want a reload and a status, got %v and %v\n", pending, queued)
		return 3
	}
	// The third client is accepted and what it sent is read.
	for deadline := time.Now().Add(10 * time.Second); !l.readingAllSent(1); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "before: the partial client was not accepted and read\n")
			return 3
		}
	}
	if !l.Pause(5*time.Second) || len(l.Held()) != 0 || len(l.unread) != 1 || string(l.unread[0].prefix) != "rel" {
		fmt.Fprintf(os.Stderr, "before: Pause did not keep the partial client unread with what it sent: %v\n", l.unread)
		return 3
	}
	h, err := l.PrepareExec(pending, queued)
	if err != nil {
		fmt.Fprintf(os.Stderr, "before: PrepareExec: %v\n", err)
		return 3
	}
	env := append(withEnv(os.Environ(), envPhase, "after"), h.Env...)
	exe, _ := os.Executable()
	err = syscall.Exec(exe, os.Args, env)
	h.Undo()
	fmt.Fprintf(os.Stderr, "before: exec: %v\n", err)
	return 3
}

func phaseAfter(path string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "after: "+format+"\n", a...)
		return 3
	}
	l, pending, err := Open(path)
	if err != nil {
		return fail("Open: %v", err)
	}
	if len(pending) != 1 {
		return fail("pending %v, want one reload client", pending)
	}
	for _, k := range EnvNames {
		if v, ok := os.LookupEnv(k); ok {
			return fail("%s=%s still set after Open", k, v)
		}
	}
	var last fsm.RequestID
	for id, c := range pending {
		last = id
		if err := Respond(c, fsm.Reply{ID: id, OK: true}, Facts{}); err != nil {
			return fail("Respond: %v", err)
		}
	}
	q := l.Queued()
	if len(q) != 1 || q[0].Command != fsm.CmdStatus || len(l.Queued()) != 0 {
		return fail("queued %v, want the status once", q)
	}
	r := q[0]
	last = max(last, r.ID)
	Respond(r.Conn, fsm.Reply{ID: r.ID, OK: true, Status: &fsm.Status{State: "running", Generation: 2, Reloads: 1}}, Facts{MasterPid: os.Getpid()})
	reqs := make(chan Request)
	go l.Serve(reqs)
	// The partial client's line, read to the end by this image, then the
	// stop.
	for _, want := range []fsm.Command{fsm.CmdReload, fsm.CmdStop} {
		r = <-reqs
		if r.Command != want {
			return fail("request %v after the exec, want %v", r.Command, want)
		}
		if r.ID <= last {
			return fail("request id %d reuses one given out before the exec (last %d)", r.ID, last)
		}
		last = r.ID
		Respond(r.Conn, fsm.Reply{ID: r.ID, OK: true}, Facts{})
	}
	l.Close()
	return 0
}

func withEnv(env []string, key, value string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

func TestReloadClientSurvivesExec(t *testing.T) {
	path := sockPath(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stderr e2etest.SyncBuffer // read while the child may still write it
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = withEnv(withEnv(os.Environ(), envPhase, "before"), envSock, path)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	waitFor(t, 10*time.Second, func() bool {
		// An empty request, which the server closes: read to the end, so
		// that the server is done with it before the partial client
		// below (else Pause may find it still unread).
		c, err := net.Dial("unix", path)
		if err != nil {
			return false
		}
		defer c.Close()
		c.(*net.UnixConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		return err == nil
	})

	// A client that sends part of its line before the exec, and the rest
	// after.
	partial, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := partial.Write([]byte("rel")); err != nil {
		t.Fatal(err)
	}

	type result struct {
		code     int
		out, err string
	}
	reload, status := make(chan result, 1), make(chan result, 1)
	go func() {
		code, out, err := client("reload", "--control", path)
		reload <- result{code, out, err}
	}()
	go func() {
		code, out, err := client("status", "--control", path, "--json")
		status <- result{code, out, err}
	}()
	if r := <-reload; r.code != 0 || r.out != "reload succeeded\n" {
		t.Fatalf("reload across exec: exit %d, out %q, err %q; child stderr: %s", r.code, r.out, r.err, stderr.String())
	}
	partial.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := partial.Write([]byte("oad\n")); err != nil {
		t.Fatal(err)
	}
	if raw, err := io.ReadAll(partial); err != nil || string(raw) != "{\"ok\":true}\n" {
		t.Fatalf("client that sent part of its line before the exec: %q, %v; child stderr: %s", raw, err, stderr.String())
	}
	r := <-status
	var a Answer
	if r.code != 0 || json.Unmarshal([]byte(r.out), &a) != nil || a.Master == nil {
		t.Fatalf("status queued across exec: exit %d, out %q, err %q; child stderr: %s", r.code, r.out, r.err, stderr.String())
	}
	if a.Master.Pid != cmd.Process.Pid || a.Master.Generation != 2 {
		t.Fatalf("status from pid %d gen %d, want the same pid %d after exec, gen 2", a.Master.Pid, a.Master.Generation, cmd.Process.Pid)
	}
	if code, out, errText := client("stop", "--control", path); code != 0 || out != "stopping\n" {
		t.Fatalf("stop after exec: exit %d, out %q, err %q; child stderr: %s", code, out, errText, stderr.String())
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("child: %v; stderr: %s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit")
	}
	exited <- nil
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the new image's Close left the socket file: %v", err)
	}
}

func TestUndoRestoresCloseOnExec(t *testing.T) {
	path := sockPath(t)
	l, reqs := serve(t, path)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("reload\n"))
	r := <-reqs
	defer r.Conn.Close()
	c2, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("status\n"))
	q := <-reqs
	defer q.Conn.Close()
	// A client whose line a Pause interrupted after "st".
	c3, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	c3.Write([]byte("st"))
	waitFor(t, 5*time.Second, func() bool { return l.readingAllSent(1) })
	l.Pause(5 * time.Second)
	defer l.Resume()
	l.pmu.Lock()
	if len(l.unread) != 1 || string(l.unread[0].prefix) != "st" {
		t.Fatalf("Pause kept %v unread, want one client with %q", l.unread, "st")
	}
	u := l.unread[0]
	l.pmu.Unlock()
	h, err := l.PrepareExec(map[fsm.RequestID]*Conn{r.ID: r.Conn}, []Request{q})
	if err != nil {
		t.Fatal(err)
	}
	lfd, _ := rawFD(l.ln)
	cfd, _ := rawFD(r.Conn.c)
	qfd, _ := rawFD(q.Conn.c)
	ufd, _ := rawFD(u.conn.c)
	want := []string{
		fmt.Sprintf("%s=%d", EnvListenerFD, lfd),
		fmt.Sprintf("%s=%d:%d", EnvPending, r.ID, cfd),
		fmt.Sprintf("%s=%d:%d:status", EnvQueued, q.ID, qfd),
		fmt.Sprintf("%s=%d:7374", EnvAccepted, ufd),
		fmt.Sprintf("%s=%d", EnvNextID, q.ID),
	}
	if strings.Join(h.Env, " ") != strings.Join(want, " ") {
		t.Fatalf("Env %q, want %q", h.Env, want)
	}
	cloexec := func(fd int) bool {
		flags, err := fcntlGetFD(fd)
		if err != nil {
			t.Fatal(err)
		}
		return flags&syscall.FD_CLOEXEC != 0
	}
	if cloexec(lfd) || cloexec(cfd) || cloexec(qfd) || cloexec(ufd) {
		t.Fatal("PrepareExec left close-on-exec set")
	}
	if err := h.Undo(); err != nil {
		t.Fatal(err)
	}
	if !cloexec(lfd) || !cloexec(cfd) || !cloexec(qfd) || !cloexec(ufd) {
		t.Fatal("Undo did not restore close-on-exec")
	}
}

// readingAllSent says whether n clients are being read and Serve has read
// all that each has sent so far.
func (l *Listener) readingAllSent(n int) bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if len(l.reading) != n {
		return false
	}
	for c := range l.reading {
		fd, err := rawFD(c.c)
		if err != nil {
			return false
		}
		var b [1]byte
		if _, _, err := syscall.Recvfrom(fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT); err != syscall.EAGAIN {
			return false
		}
	}
	return true
}

func fcntlGetFD(fd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
