package peers

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// run is one supervisor's run of one case: a directory of its own and a
// marker in the environment of everything it starts, by which the cleanup
// finds and kills what is left (tini and dumb-init are not subreapers
// here: their orphans leave their process tree).
type run struct {
	t      *testing.T
	dir    string
	marker string // "PEERS_CASE=N"
	procs  []*proc
}

var runSeq atomic.Int64

func newRun(t *testing.T) *run {
	dir := t.TempDir()
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	r := &run{t: t, dir: dir, marker: fmt.Sprintf("PEERS_CASE=%d.%d", os.Getpid(), runSeq.Add(1))}
	t.Cleanup(r.killAll)
	return r
}

// path is a file of the run's directory.
func (r *run) path(name string) string { return filepath.Join(r.dir, name) }

// proc is a supervisor (or a command) a run started.
type proc struct {
	pid    int
	done   chan struct{}
	status int // as a shell reports it; read after done
	out    string
	errf   string
}

// start runs argv through the launcher with nothing ignored or blocked, in
// the run's directory and a process group of its own, stdout and stderr in
// files.
func (r *run) start(argv ...string) *proc { return r.startSigs("", argv...) }

// startSigs is start with the launcher's spec ("ign=...;blk=...").
func (r *run) startSigs(spec string, argv ...string) *proc {
	r.t.Helper()
	return r.exec(append([]string{selfPath}, argv...), envLaunch+"="+spec)
}

// startPlain runs argv without the launcher (the exit-code cases, which
// start hundreds and do not depend on signals).
func (r *run) startPlain(argv ...string) *proc {
	r.t.Helper()
	return r.exec(argv)
}

func (r *run) exec(argv []string, env ...string) *proc {
	r.t.Helper()
	n := len(r.procs)
	p := &proc{done: make(chan struct{}), out: r.path(fmt.Sprintf("stdout.%d", n)), errf: r.path(fmt.Sprintf("stderr.%d", n))}
	fo, err := os.Create(p.out)
	if err != nil {
		r.t.Fatal(err)
	}
	defer fo.Close()
	fe, err := os.Create(p.errf)
	if err != nil {
		r.t.Fatal(err)
	}
	defer fe.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), r.marker), env...)
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = fo, fe
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	startMu.RLock()
	err = cmd.Start()
	if err == nil {
		started.Store(cmd.Process.Pid, true)
	}
	startMu.RUnlock()
	if err != nil {
		r.t.Fatal(err)
	}
	p.pid = cmd.Process.Pid
	r.procs = append(r.procs, p)
	go func() {
		cmd.Wait()
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		p.status = ws.ExitStatus()
		if ws.Signaled() {
			p.status = 128 + int(ws.Signal())
		}
		started.Delete(p.pid)
		close(p.done)
	}()
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for p's exit and returns its status; the test fails if it
// has not exited within timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.status
	case <-time.After(timeout):
		t.Fatalf("pid %d still running after %v; stderr:\n%s", p.pid, timeout, p.stderr())
		return -1
	}
}

func (p *proc) stdout() string { b, _ := os.ReadFile(p.out); return string(b) }
func (p *proc) stderr() string { b, _ := os.ReadFile(p.errf); return string(b) }

// signal sends sig to p's pid (not its group).
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := syscall.Kill(p.pid, sig); err != nil {
		t.Fatalf("kill -%d %d: %v", sig, p.pid, err)
	}
}

// killAll kills every process that carries the run's marker, until none
// is left, and waits for what the run started.
func (r *run) killAll() {
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := r.marked()
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Errorf("cleanup: processes of the run still there after 15s: %v", pids)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, p := range r.procs {
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			r.t.Errorf("cleanup: pid %d not reaped", p.pid)
		}
	}
}

// marked lists the live processes whose environment has the run's marker
// (a zombie's environment reads empty).
func (r *run) marked() []int {
	want := []byte(r.marker + "\x00")
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.HasPrefix(b, want) || bytes.Contains(b, append([]byte{0}, want...)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pstat is what a test needs of /proc/PID/stat.
type pstat struct {
	state           byte
	ppid, pgid, sid int
}

func statOf(pid int) (pstat, bool) {
	p, ok := e2etest.ReadProc(pid)
	return pstat{state: p.State, ppid: p.Ppid, pgid: p.Pgrp, sid: p.Session}, ok
}

// alive says whether pid exists and is not a zombie.
func alive(pid int) bool {
	s, ok := statOf(pid)
	return ok && s.state != 'Z'
}

// allStats is every process's stat, by pid.
func allStats() map[int]pstat {
	out := map[int]pstat{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			if s, ok := statOf(pid); ok {
				out[pid] = s
			}
		}
	}
	return out
}

// descendants are pid's descendants (zombies included), sorted.
func descendants(pid int) []int {
	all := allStats()
	var out []int
	var walk func(int)
	walk = func(p int) {
		for c, s := range all {
			if s.ppid == p {
				out = append(out, c)
				walk(c)
			}
		}
	}
	walk(pid)
	slices.Sort(out)
	return out
}

// liveDescendants are pid's descendants that are not zombies.
func liveDescendants(pid int) []int {
	var out []int
	for _, d := range descendants(pid) {
		if alive(d) {
			out = append(out, d)
		}
	}
	return out
}

// sigField reads "SigIgn", "SigBlk"... of /proc/PID/status as a set.
func sigField(status, name string) (uint64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, fmt.Errorf("no %s in %q", name, status)
}

func sigBit(n int) uint64 { return 1 << (n - 1) }

// recorder is the print-signals helper, in sh: it traps each signal
// number given after $1, appends the number of each one it receives to the
// file $1, and writes "ready PID" there first, once every trap is set. It
// never exits on its own (SIGKILL ends it). A shell traps every signal the
// suites send, SIGPROF, SIGURG and 34 included, which a Go program cannot
// (the runtime keeps SIGPROF for its profiler and SIGURG for preemption).
// Its sleep is in its process group: a signal sent to the group ends it,
// and the loop starts another.
const recorder = `ulimit -c 0
got=$1; shift
for n in "$@"; do trap "echo $n >> '$got'" $n; done
echo "ready $$" >> "$got"
while :; do sleep 1000 & wait $!; done
`

// writeRecorder returns the recorder's path (TestMain wrote it).
func (r *run) writeRecorder() string { return recorderPath }

// got reads a recorder's file: its pid (0 before it is ready) and the
// signals it recorded since.
func got(path string) (pid int, sigs []int) {
	b, _ := os.ReadFile(path)
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "ready "); ok {
			pid, _ = strconv.Atoi(p)
			continue
		}
		if n, err := strconv.Atoi(line); err == nil {
			sigs = append(sigs, n)
		}
	}
	return pid, sigs
}

// waitReady waits for the recorder writing to path and returns its pid.
func waitReady(t *testing.T, p *proc, path string) int {
	t.Helper()
	var pid int
	e2etest.WaitFor(t, 20*time.Second, "the recorder's traps", func() bool {
		pid, _ = got(path)
		return pid != 0 || p.exited()
	})
	if pid == 0 {
		t.Fatalf("supervisor exited (status %d) before the recorder was ready; stderr:\n%s", p.status, p.stderr())
	}
	return pid
}

// waitGot waits until the recorder has recorded exactly want, in order.
func waitGot(t *testing.T, path string, want ...int) {
	t.Helper()
	var have []int
	if !e2etest.Poll(10*time.Second, func() bool {
		_, have = got(path)
		return len(have) >= len(want)
	}) || !slices.Equal(have, want) {
		t.Fatalf("recorder got %v, want %v", have, want)
	}
}
