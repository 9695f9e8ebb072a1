package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// This file holds what the end-to-end tests need to run the real binary
// and look at processes through /proc.

var (
	binaryDir  string // removed by TestMain
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binaryDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// mworkerBinary builds the binary under test once, on first use, so that
// the unit tests alone do not pay for it.
func mworkerBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		binaryPath, binaryErr = e2etest.Build(binaryDir, "mworker", "./cmd/mworker")
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// master is one mworker process started by a test.
type master struct {
	t    *testing.T
	dir  string // the test's directory: the script, the log, the workers' files
	cmd  *exec.Cmd
	pid  int
	log  string        // the master's stdout and stderr
	done chan struct{} // closed when the master has exited
	proc *e2etest.Process
}

// workerScript is the start of every worker. Its announce records the
// worker's pid in "spawned" and its generation in gen.<pid>, in the
// directory given as $1; a worker calls it once its traps are set, so that
// a test which saw it may signal the worker.
const workerScript = `d="$1"
announce() {
	echo "$MWORKER_GENERATION" > "$d/gen.$$"
	echo $$ >> "$d/spawned"
}
`

// idle is the end of a worker that runs until told otherwise: it
// announces itself and sleeps. The sleep is in the foreground: a signal
// to the worker's group ends it at once, and a sleep left behind by a
// killed shell ends soon.
const idle = `announce
while :; do sleep 0.5; done
`

// startRun writes script (after workerScript) as the executable
// worker.sh in a new directory and starts "binary run OPTIONS -- /bin/sh
// DIR/worker.sh DIR"; binary "" is the built one. Options that contain
// "--" give the command themselves, with {dir} standing for DIR.
func startRun(t *testing.T, binary, script string, options ...string) *master {
	t.Helper()
	if binary == "" {
		binary = mworkerBinary(t)
	}
	dir := t.TempDir()
	sh := filepath.Join(dir, "worker.sh")
	if err := e2etest.WriteExecutable(sh, "#!/bin/sh\n"+workerScript+script); err != nil {
		t.Fatal(err)
	}
	args := []string{"run"}
	for _, o := range options {
		args = append(args, strings.ReplaceAll(o, "{dir}", dir))
	}
	if !slices.Contains(args, "--") {
		args = append(args, "--", "/bin/sh", sh, dir)
	}
	m := &master{t: t, dir: dir, log: filepath.Join(dir, "master.log")}
	p, err := e2etest.StartLogged(m.log, binary, args...)
	if err != nil {
		t.Fatal(err)
	}
	m.proc, m.cmd, m.pid, m.done = p, p.Cmd, p.Pid, p.Done
	t.Cleanup(m.cleanup)
	return m
}

func (m *master) cleanup() {
	if !m.exited() {
		m.cmd.Process.Signal(syscall.SIGKILL)
		<-m.done
	}
	// Workers stop when the master dies; make sure of it before the
	// directory they write to is removed.
	for _, p := range m.spawned() {
		if strings.Contains(cmdline(p), m.dir) {
			syscall.Kill(-p, syscall.SIGKILL)
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	if m.t.Failed() {
		m.t.Logf("master log (last lines):\n%s", lastLines(m.logText(), 60))
	}
}

func (m *master) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the master.
func (m *master) signal(sig syscall.Signal) {
	m.t.Helper()
	if err := syscall.Kill(m.pid, sig); err != nil {
		m.t.Fatalf("kill %d %v: %v", m.pid, sig, err)
	}
}

// wait waits for the master to exit and returns its status.
func (m *master) wait(timeout time.Duration) int {
	m.t.Helper()
	select {
	case <-m.done:
		return m.proc.Status
	case <-time.After(timeout):
		m.t.Fatalf("master %d still running after %v; children %v", m.pid, timeout, children(m.pid))
		return -1
	}
}

func (m *master) logText() string {
	b, _ := os.ReadFile(m.log)
	return string(b)
}

// spawned lists the pids of every worker started so far, in order.
func (m *master) spawned() []int { return readPids(filepath.Join(m.dir, "spawned")) }

// workers lists the master's live children that ran the worker script,
// sorted; orphans it adopted and children still in the trampoline are not
// workers.
func (m *master) workers() []int {
	spawned := m.spawned()
	var live []int
	for _, c := range children(m.pid) {
		if c.state != 'Z' && slices.Contains(spawned, c.pid) {
			live = append(live, c.pid)
		}
	}
	return live
}

// waitWorkers waits until the master has exactly n live workers, and
// returns them.
func (m *master) waitWorkers(n int) []int {
	m.t.Helper()
	var ws []int
	e2etest.WaitFor(m.t, 10*time.Second, fmt.Sprintf("%d workers", n), func() bool {
		if m.exited() {
			m.t.Fatalf("master exited with %d while waiting for workers", m.proc.Status)
		}
		ws = m.workers()
		return len(ws) == n
	})
	return ws
}

// file returns the content of a worker's file, "" when it does not exist.
func (m *master) file(name string, pid int) string {
	b, _ := os.ReadFile(filepath.Join(m.dir, name+"."+strconv.Itoa(pid)))
	return strings.TrimSpace(string(b))
}

// waitLog waits until the master's log, from byte offset from on, has a
// line that contains every one of words (case-insensitive), and returns it.
func (m *master) waitLog(from int, words ...string) string {
	m.t.Helper()
	var found string
	e2etest.WaitFor(m.t, 10*time.Second, fmt.Sprintf("a log line with %q", words), func() bool {
		exited := m.exited() // before reading: its last words are then in the log
		text := m.logText()
		for _, line := range strings.Split(text[min(from, len(text)):], "\n") {
			low := strings.ToLower(withoutPaths(line))
			ok := true
			for _, w := range words {
				ok = ok && strings.Contains(low, w)
			}
			if ok {
				found = line
				return true
			}
		}
		if exited {
			m.t.Fatalf("master exited %d without logging %q", m.proc.Status, words)
		}
		return false
	})
	return found
}

// withoutPaths drops every word with a slash from a log line, so that
// the names of the test's directories cannot match a word looked for.
func withoutPaths(line string) string {
	f := strings.Fields(line)
	f = slices.DeleteFunc(f, func(w string) bool { return strings.Contains(w, "/") })
	return strings.Join(f, " ")
}

// proc is one line of /proc/<pid>/stat, as much as the tests need.
type proc struct {
	pid, ppid, pgid int
	state           byte
}

func readStat(pid int) (proc, bool) {
	p, ok := e2etest.ReadProc(pid)
	return proc{pid: p.Pid, ppid: p.Ppid, pgid: p.Pgrp, state: p.State}, ok
}

// allProcs scans /proc.
func allProcs() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readStat(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// children lists the children of pid, zombies included, sorted by pid.
func children(pid int) []proc {
	var out []proc
	for _, p := range allProcs() {
		if p.ppid == pid {
			out = append(out, p)
		}
	}
	return out
}

// zombies lists the children of pid that have exited but are not reaped.
func zombies(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		if c.state == 'Z' {
			out = append(out, c.pid)
		}
	}
	return out
}

// alive says whether pid runs: it exists and is not a zombie.
func alive(pid int) bool {
	p, ok := readStat(pid)
	return ok && p.state != 'Z'
}

// cmdline returns /proc/<pid>/cmdline with NULs as spaces.
func cmdline(pid int) string {
	return strings.Join(argv(pid), " ")
}

func argv(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// fdCount counts the open file descriptors of pid.
// fdCount counts pid's open descriptors, less the Go runtime's netpoller
// (an epoll and an eventfd, made on first use, for a timer as much as
// for a socket: whether the first image has made it yet says nothing
// about a leak); mworker makes neither itself.
func fdCount(pid int) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		switch target, _ := os.Readlink(filepath.Join(dir, e.Name())); target {
		case "anon_inode:[eventpoll]", "anon_inode:[eventfd]":
		default:
			n++
		}
	}
	return n
}

func fdList(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		fmt.Fprintf(&b, " %s->%s", e.Name(), target)
	}
	return b.String()
}

// readPids reads one pid a line.
func readPids(path string) []int {
	b, _ := os.ReadFile(path) // none yet when it does not exist
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sfList returns the pids that follow "-sf" in argv before "--".
func sfList(args []string) []int {
	var pids []int
	for i := 0; i < len(args) && args[i] != "--"; i++ {
		if args[i] != "-sf" {
			continue
		}
		for i+1 < len(args) {
			p, err := strconv.Atoi(args[i+1])
			if err != nil {
				break
			}
			pids = append(pids, p)
			i++
		}
	}
	slices.Sort(pids)
	return pids
}
