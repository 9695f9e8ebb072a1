// Package tty tests mworker in a terminal: the real binary in a session of
// its own on a pseudo-terminal, as a shell or "docker run -it" starts it,
// driven by what a user types (Ctrl-C, Ctrl-Z, EOF) and by a job-control
// shell (bash) that runs it as a job. It ports the terminal cases of
// dumb-init's tests/tty_test.py and tests/shell_background_test.py, and
// checks tini's behaviour for Ctrl-C (the worker, in the foreground, gets
// it; the master does not).
package tty

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// mworkerPath is the binary under test, built by TestMain.
var mworkerPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-tty-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tty:", err)
		os.Exit(1)
	}
	mworkerPath, err = e2etest.Build(dir, "mworker", "./cmd/mworker")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tty:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// term is a command running as the leader of a new session whose
// controlling terminal is a pseudo-terminal the test types into and reads.
type term struct {
	t    *testing.T
	ptm  *os.File // the terminal's master side
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer // everything the session wrote to the terminal
	done chan struct{}
	// status is the leader's exit status as a shell reports it; read it
	// after done is closed.
	status int
}

// termOpts are a terminal's settings and the environment of its session.
type termOpts struct {
	echo   bool     // the terminal echoes what is typed
	tostop bool     // stty tostop: background writes stop the writer (SIGTTOU)
	env    []string // nil: the test's
}

// startTerm starts argv as a session leader on a new terminal, with echo
// and output processing off unless echo is set (so that what a test reads
// is what the programs wrote, as dumb-init's tests set it).
func startTerm(t *testing.T, o termOpts, argv ...string) *term {
	t.Helper()
	ptm, pts, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	tio, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if !o.echo {
		tio.Lflag &^= unix.ECHO
	}
	if o.tostop {
		tio.Lflag |= unix.TOSTOP
	}
	if err := unix.IoctlSetTermios(int(pts.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = o.env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	tm := &term{t: t, ptm: ptm, cmd: cmd, done: make(chan struct{})}
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := ptm.Read(buf)
			tm.mu.Lock()
			tm.out.Write(buf[:n])
			tm.mu.Unlock()
			if err != nil { // EIO once no process has the terminal open
				return
			}
		}
	}()
	go func() {
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		tm.status = ws.ExitStatus()
		if ws.Signaled() {
			tm.status = 128 + int(ws.Signal())
		}
		close(tm.done)
	}()
	t.Cleanup(func() {
		killSession(cmd.Process.Pid)
		<-tm.done
		ptm.Close()
		<-read
	})
	return tm
}

// write types s.
func (tm *term) write(s string) {
	tm.t.Helper()
	if _, err := tm.ptm.Write([]byte(s)); err != nil {
		tm.t.Fatalf("type %q: %v", s, err)
	}
}

func (tm *term) text() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.out.String()
}

// waitFor waits for what to appear on the terminal, after from bytes.
func (tm *term) waitFor(what string, from int) int {
	tm.t.Helper()
	var at int
	ok := e2etest.Poll(30*time.Second, func() bool {
		i := strings.Index(tm.text()[min(from, len(tm.text())):], what)
		at = from + i + len(what)
		return i >= 0
	})
	if !ok {
		tm.t.Fatalf("%q never appeared on the terminal; it shows:\n%s\nprocesses:\n%s", what, tm.text(), sessionPs(tm.cmd.Process.Pid))
	}
	return at
}

// wait waits for the session leader's exit and returns its status.
func (tm *term) wait() int {
	tm.t.Helper()
	select {
	case <-tm.done:
		return tm.status
	case <-time.After(30 * time.Second):
		tm.t.Fatalf("still running after 30 s; the terminal shows:\n%s\nprocesses:\n%s", tm.text(), sessionPs(tm.cmd.Process.Pid))
		return 0
	}
}

// killSession kills every process of session sid.
func killSession(sid int) {
	for _, p := range e2etest.Procs(func(p e2etest.Proc) bool { return p.Session == sid }) {
		syscall.Kill(p.Pid, syscall.SIGKILL)
	}
}

func sessionPs(sid int) string {
	var b strings.Builder
	for _, p := range e2etest.Procs(func(p e2etest.Proc) bool { return p.Session == sid }) {
		fmt.Fprintf(&b, "  pid %d ppid %d pgrp %d state %c %s in %s; %s\n", p.Pid, p.Ppid, p.Pgrp, p.State, p.Comm,
			e2etest.Wchan(p.Pid), signalState(p.Pid))
	}
	return b.String()
}

// signalState is pid's pending, blocked and caught signals, and the state
// of each of its threads, for a failure message.
func signalState(pid int) string {
	st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	var f []string
	for _, l := range strings.Split(string(st), "\n") {
		if k, v, ok := strings.Cut(l, ":\t"); ok && (k == "SigPnd" || k == "ShdPnd" || k == "SigBlk" || k == "SigCgt") {
			f = append(f, k+"="+strings.TrimLeft(v, "0"))
		}
	}
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	var states []string
	for _, task := range tasks {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + task.Name() + "/stat")
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
			states = append(states, string(b[i+2]))
		}
	}
	return strings.Join(f, " ") + " threads " + strings.Join(states, "")
}

// foreground is the foreground process group of the terminal of the
// session that sid leads, as the kernel reports it for the leader.
func foreground(sid int) int {
	p, _ := e2etest.ReadProc(sid)
	return p.Tpgid
}
