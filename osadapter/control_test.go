package osadapter

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/control"

	"github.com/mworker/mworker/internal/e2etest"
)

// ask sends one request line to the control socket at path and decodes
// the answer.
func ask(t *testing.T, path, req string) control.Answer {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", req, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, req+"\n"); err != nil {
		t.Fatalf("%s: %v", req, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s: no answer: %v", req, err)
	}
	var a control.Answer
	if err := json.Unmarshal(line, &a); err != nil {
		t.Fatalf("%s: answer %q: %v", req, line, err)
	}
	return a
}

// The control socket answers status with the master's pid and the
// workers' uptimes, answers reload from the new image once the new
// generation is ready, keeps the uptimes of adopted workers across the
// re-exec, and is removed when the master exits.
func TestRealControlSocket(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	// Old workers ignore the stop signal (SIGWINCH) until the stop
	// timeout kills them, so that they are still listed after the reload.
	m := startMaster(t, bin, testMaster{Workers: 2, Control: "DIR/ctl.sock", StopSignal: int(syscall.SIGWINCH), StopTimeout: 3 * time.Second,
		Command: []string{bin, "worker", "DIR"}})
	path := filepath.Join(m.dir, "ctl.sock")
	e2etest.WaitFor(t, 20*time.Second, "2 workers", func() bool { return len(workerPids(m.dir)) == 2 })
	e2etest.WaitFor(t, 10*time.Second, "the control socket", func() bool { _, err := os.Stat(path); return err == nil })
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", fi.Mode().Perm())
	}

	first := ask(t, path, "status")
	if !first.OK || first.Master == nil || first.Master.Pid != m.cmd.Process.Pid || first.Master.Generation != 1 || len(first.Workers) != 2 {
		t.Fatalf("status before the reload: %+v", first)
	}
	e2etest.WaitFor(t, 10*time.Second, "a measurable uptime", func() bool {
		return ask(t, path, "status").Workers[0].UptimeSeconds >= 0.2
	})

	// The reload's answer comes from the new image.
	if a := ask(t, path, "reload"); !a.OK {
		t.Fatalf("reload answered %+v", a)
	}
	if n := m.count("re-executed; starting the new generation"); n != 1 {
		t.Fatalf("%d re-execs logged before the reload was answered, want 1", n)
	}
	s := ask(t, path, "status")
	if s.Master.Pid != m.cmd.Process.Pid || s.Master.Generation != 2 || s.Master.Reloads != 1 || len(s.Workers) != 4 {
		t.Fatalf("status after the reload: %+v", s)
	}
	var oldUp, newUp float64
	for _, w := range s.Workers {
		if w.Generation == 1 {
			oldUp = max(oldUp, w.UptimeSeconds)
		} else {
			newUp = max(newUp, w.UptimeSeconds)
		}
	}
	if oldUp < 0.2 || oldUp <= newUp {
		t.Errorf("after the re-exec old workers are up %.3fs and new ones %.3fs: want the old ones' uptime kept (>= 0.2s) and above the new ones'", oldUp, newUp)
	}
	if a := ask(t, path, "bogus"); a.OK || a.Error == "" {
		t.Errorf("a bogus request got %+v, want an error", a)
	}

	if a := ask(t, path, "stop"); !a.OK {
		t.Errorf("stop answered %+v", a)
	}
	m.wait(40 * time.Second)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind after exit: %v", err)
	}
}

// dialRequest connects to the control socket and sends req; the answer is
// read later.
func dialRequest(t *testing.T, path, req string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req+"\n"); err != nil {
		t.Fatal(err)
	}
	return c
}

func readAnswer(t *testing.T, c net.Conn) control.Answer {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var a control.Answer
	if err := json.Unmarshal(line, &a); err != nil {
		t.Fatalf("answer %q: %v", line, err)
	}
	return a
}

// Just before the execve the waiting reload client and the requests still
// in the channel are named for the next image; when the execve fails, the
// fds are close-on-exec again, the reload client gets the error and the
// queued request is answered by this image.
func TestControlHandoverAndFailedExec(t *testing.T) {
	f := newFakeOS()
	f.execErr = syscall.ENOEXEC
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, _ := fakeLoop(t, f, Config{Control: path}, nil)
	defer l.closeTransports()
	l.start()
	go l.ctl.serve(l.log)

	reload := dialRequest(t, path, "reload")
	e2etest.WaitFor(t, 10*time.Second, "the reload request", func() bool { return len(l.ctl.in) == 1 })
	status := dialRequest(t, path, "status")
	e2etest.WaitFor(t, 10*time.Second, "the status request", func() bool { return len(l.ctl.in) == 2 })
	l.onRequest(<-l.ctl.in) // the reload: exec, which fails

	if len(f.execs) != 1 {
		t.Fatalf("%d execs, want 1", len(f.execs))
	}
	env := f.execs[0].env
	pending, _ := lookupEnv(env, control.EnvPending)
	queued, _ := lookupEnv(env, control.EnvQueued)
	var rid, rfd, sid, sfd int
	if _, err := fmt.Sscanf(pending, "%d:%d", &rid, &rfd); err != nil || rid != 1 {
		t.Errorf("%s=%q: want the reload client, request 1", control.EnvPending, pending)
	}
	if _, err := fmt.Sscanf(queued, "%d:%d:status", &sid, &sfd); err != nil || sid != 2 {
		t.Errorf("%s=%q: want the queued status request 2", control.EnvQueued, queued)
	}
	if a := readAnswer(t, reload); a.OK || a.Error == "" {
		t.Errorf("reload after a failed execve answered %+v, want the error", a)
	}
	if a := readAnswer(t, status); !a.OK || a.Master == nil || a.Master.Pid != f.pid || len(a.Workers) != 2 {
		t.Errorf("queued status answered %+v, want this master's status", a)
	}
	lfd, _ := lookupEnv(env, control.EnvListenerFD)
	var fd int
	fmt.Sscan(lfd, &fd)
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("control listener fd %d after a failed execve: flags %#x, %v; want close-on-exec again", fd, flags, err)
	}
	if len(l.ctl.conns) != 0 {
		t.Errorf("%d clients still held after their answers", len(l.ctl.conns))
	}
}

// Reload requests read but not yet fed to the machine when it re-executes
// join that reload: their clients are handed over as waiting for it, in
// the handover's Requests, so that the next image answers them with its
// outcome instead of re-executing once more for each. A status request
// is handed over to be fed.
func TestControlReloadsReadDuringExecJoinIt(t *testing.T) {
	f := newFakeOS()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, _ := fakeLoop(t, f, Config{Control: path}, nil)
	defer l.closeTransports()
	l.start()
	go l.ctl.serve(l.log)

	for i, req := range []string{"reload", "reload", "status", "reload"} {
		c := dialRequest(t, path, req)
		defer c.Close()
		e2etest.WaitFor(t, 10*time.Second, "request "+req, func() bool { return len(l.ctl.in) == i+1 })
	}
	l.onRequest(<-l.ctl.in) // the first reload: exec

	if len(f.execs) != 1 {
		t.Fatalf("%d execs, want 1", len(f.execs))
	}
	env := f.execs[0].env
	v, _ := lookupEnv(env, envState)
	st, err := decodeState(v)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(st.Handover.Requests) != "[1 2 4]" {
		t.Errorf("handover Requests %v, want the reloads [1 2 4]", st.Handover.Requests)
	}
	pending, _ := lookupEnv(env, control.EnvPending)
	queued, _ := lookupEnv(env, control.EnvQueued)
	var ids [3]int
	var fds [3]int
	if _, err := fmt.Sscanf(pending, "%d:%d,%d:%d,%d:%d", &ids[0], &fds[0], &ids[1], &fds[1], &ids[2], &fds[2]); err != nil || ids != [3]int{1, 2, 4} {
		t.Errorf("%s=%q: want the clients of reloads 1, 2 and 4", control.EnvPending, pending)
	}
	var sid, sfd int
	if _, err := fmt.Sscanf(queued, "%d:%d:status", &sid, &sfd); err != nil || sid != 3 {
		t.Errorf("%s=%q: want the status request 3 alone", control.EnvQueued, queued)
	}
}
