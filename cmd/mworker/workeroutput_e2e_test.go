package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/e2etest"
)

// outMaster is a master whose stdout and stderr the test holds itself.
type outMaster struct {
	t    *testing.T
	dir  string
	sock string
	cmd  *exec.Cmd
	done chan struct{}
}

// startOut starts "mworker run OPTIONS --control SOCK -- /bin/sh
// DIR/worker.sh DIR" with stdout and stderr as given.
func startOut(t *testing.T, script string, stdout, stderr *os.File, options ...string) *outMaster {
	t.Helper()
	dir := t.TempDir()
	sh := filepath.Join(dir, "worker.sh")
	if err := e2etest.WriteExecutable(sh, "#!/bin/sh\n"+workerScript+script); err != nil {
		t.Fatal(err)
	}
	m := &outMaster{t: t, dir: dir, sock: filepath.Join(dir, "c.sock"), done: make(chan struct{})}
	args := append([]string{"run", "--control", m.sock}, options...)
	args = append(args, "--", "/bin/sh", sh, dir)
	m.cmd = exec.Command(mworkerBinary(t), args...)
	m.cmd.Stdout, m.cmd.Stderr = stdout, stderr
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.cmd.Wait(); close(m.done) }()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			m.cmd.Process.Signal(syscall.SIGKILL)
			<-m.done
		}
		for _, p := range readPids(filepath.Join(dir, "spawned")) {
			syscall.Kill(-p, syscall.SIGKILL)
		}
	})
	return m
}

func (m *outMaster) status() (control.Answer, error) {
	out, err := exec.Command(mworkerBinary(m.t), "status", "--control", m.sock, "--json", "--timeout", "10s").Output()
	var a control.Answer
	if err == nil {
		err = json.Unmarshal(out, &a)
	}
	if err == nil && a.Master == nil {
		err = fmt.Errorf("status without master: %s", out)
	}
	return a, err
}

func (m *outMaster) waitExit(timeout time.Duration) {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(timeout):
		m.t.Fatalf("master still running after %v", timeout)
	}
}

// collect reads r line by line until EOF; n counts the lines that
// contain "stream" (worker lines under --worker-output json), as they come.
func collect(r io.Reader, n *atomic.Int64) (lines *[]string, done chan struct{}) {
	lines, done = new([]string), make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			*lines = append(*lines, sc.Text())
			if n != nil && strings.Contains(sc.Text(), `"stream":`) {
				n.Add(1)
			}
		}
	}()
	return lines, done
}

// The acceptance test of issue 14: 4 workers each print 10,000 lines as
// fast as they can to both streams, under --log-format json
// --worker-output json. Every line of the master's stdout and stderr is a
// JSON object; each worker line names its pid, generation and slot, which
// match a worker the master started; and the lines received plus those
// the master reports dropped are exactly the lines written, each worker's
// in order.
func TestWorkerOutputJSON(t *testing.T) {
	t.Parallel()
	const workers, lines = 4, 10000
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	defer errR.Close()
	var seen atomic.Int64
	stdout, outDone := collect(outR, &seen)
	stderr, errDone := collect(errR, &seen)
	// Each line one write(2) of the shell's builtin echo; a last line with
	// no newline is flushed when the worker exits.
	m := startOut(t, `announce
i=0
while [ $i -lt `+strconv.Itoa(lines)+` ]; do
	echo "out $i"
	echo "err $i" >&2
	i=$((i+1))
done
touch "$d/done.$$"
exec sleep 1000
`, outW, errW, "-n", strconv.Itoa(workers), "--log-format", "json", "--worker-output", "json", "--ready", "immediate")
	outW.Close()
	errW.Close()

	var a control.Answer
	e2etest.WaitFor(t, 60*time.Second, "every worker to write its lines", func() bool {
		done, _ := filepath.Glob(filepath.Join(m.dir, "done.*"))
		return len(done) == workers
	})
	// Every line written is read by now, or dropped: the master has
	// nothing left to take from the pipes.
	e2etest.WaitFor(t, 60*time.Second, "every worker line received or counted as dropped", func() bool {
		a, err = m.status()
		return err == nil && seen.Load()+a.Master.DroppedWorkerLines >= workers*lines*2
	})
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(30 * time.Second)
	<-outDone
	<-errDone

	pids := map[int]int{} // pid: slot
	for _, w := range a.Workers {
		pids[w.Pid] = w.Slot
	}
	if len(pids) != workers {
		t.Fatalf("status names %d workers: %+v", len(pids), a.Workers)
	}
	type key struct {
		pid    int
		stream string
	}
	next := map[key]int{}
	received := 0
	for name, ls := range map[string][]string{"stdout": *stdout, "stderr": *stderr} {
		for i, l := range ls {
			var v map[string]any
			if err := json.Unmarshal([]byte(l), &v); err != nil {
				t.Fatalf("%s line %d is not JSON: %v: %q", name, i+1, err, l)
			}
			if _, ok := v["msg"]; ok {
				if name != "stderr" {
					t.Errorf("a log line of the master on stdout: %q", l)
				}
				continue // the master's own
			}
			var wl struct {
				Time, Stream, Text    string
				Pid, Generation, Slot int
			}
			if err := json.Unmarshal([]byte(l), &wl); err != nil || wl.Stream != name || wl.Time == "" {
				t.Fatalf("%s line %d: %v %q", name, i+1, err, l)
			}
			slot, ok := pids[wl.Pid]
			if !ok || slot != wl.Slot || wl.Generation != 1 {
				t.Fatalf("%s line %d names pid %d generation %d slot %d, not a worker: %q", name, i+1, wl.Pid, wl.Generation, wl.Slot, l)
			}
			k := key{wl.Pid, name}
			n, err := strconv.Atoi(strings.TrimPrefix(wl.Text, map[string]string{"stdout": "out ", "stderr": "err "}[name]))
			if err != nil || n < next[k] {
				t.Fatalf("%s line %d: text %q out of order (expected %d or later)", name, i+1, wl.Text, next[k])
			}
			next[k] = n + 1
			received++
		}
	}
	dropped := a.Master.DroppedWorkerLines
	if total := int64(received) + dropped; total != workers*lines*2 {
		t.Errorf("%d worker lines received + %d dropped = %d, want %d", received, dropped, total, workers*lines*2)
	}
	t.Logf("%d worker lines received, %d dropped; %d stderr lines, %d stdout lines", received, dropped, len(*stderr), len(*stdout))
}

// The master's stdout and stderr are pipes nobody reads, and the workers
// print without end: the master and the workers keep running, status
// answers and counts the lines dropped, a reload replaces the workers,
// and a stop ends it all in bounded time.
func TestWorkerOutputStalledReader(t *testing.T) {
	t.Parallel()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close() // never read
	defer errR.Close()
	m := startOut(t, `announce
i=0
while :; do
	echo "out $i"
	echo "err $i" >&2
	i=$((i+1))
	[ $((i % 1000)) -eq 0 ] && echo $i > "$d/count.$$"
done
`, outW, errW, "-n", "2", "--log-format", "json", "--worker-output", "json", "--ready", "immediate", "--stop-timeout", "5s")
	outW.Close()
	errW.Close()

	count := func(pid int) int {
		b, _ := os.ReadFile(filepath.Join(m.dir, "count."+strconv.Itoa(pid)))
		n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		return n
	}
	var first []int
	e2etest.WaitFor(t, 30*time.Second, "two workers writing well past the pipes' 64 KiB", func() bool {
		first = readPids(filepath.Join(m.dir, "spawned"))
		return len(first) == 2 && count(first[0]) >= 20000 && count(first[1]) >= 20000
	})
	a, err := m.status()
	if err != nil {
		t.Fatalf("status with stderr stalled: %v", err)
	}
	if a.Master.DroppedWorkerLines == 0 {
		t.Errorf("no worker lines dropped, with nobody reading: %+v", a.Master)
	}
	// Still writing: they are not blocked.
	before := count(first[0])
	e2etest.WaitFor(t, 20*time.Second, "worker to keep writing", func() bool { return count(first[0]) > before+5000 })

	out, err := exec.Command(mworkerBinary(t), "reload", "--control", m.sock, "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("reload with stderr stalled: %v: %s", err, out)
	}
	a, err = m.status()
	if err != nil {
		t.Fatal(err)
	}
	if a.Master.Generation != 2 {
		t.Errorf("after the reload: generation %d", a.Master.Generation)
	}
	for _, w := range a.Workers {
		if w.Generation == 2 {
			pid := w.Pid
			e2etest.WaitFor(t, 20*time.Second, "a new worker to write", func() bool { return count(pid) >= 20000 })
		}
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(30 * time.Second)
}

// Output keeps flowing across a re-exec: a worker that writes a numbered
// line every 10 ms, and goes on for half a second after its stop signal,
// outlives the re-exec of a reload (--reexec always); its lines, read by
// the first image and then by the second, are all there, in order, and so
// is its last line, written with no newline just before it exits.
func TestWorkerOutputAcrossReexec(t *testing.T) {
	t.Parallel()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	stdout, outDone := collect(outR, nil)
	m := startOut(t, `announce
trap 'stopping=1' TERM
i=0
s=0
while :; do
	echo "tick $i"
	i=$((i+1))
	if [ -n "$stopping" ]; then
		s=$((s+1))
		[ $s -ge 50 ] && { printf "bye $i"; exit 0; }
	fi
	sleep 0.01
done
`, outW, nil, "--worker-output", "prefix", "--ready", "immediate", "--reexec", "always")
	outW.Close()
	var first []int
	e2etest.WaitFor(t, 30*time.Second, "the first worker", func() bool {
		first = readPids(filepath.Join(m.dir, "spawned"))
		return len(first) == 1
	})
	out, err := exec.Command(mworkerBinary(t), "reload", "--control", m.sock, "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("reload: %v: %s", err, out)
	}
	if args := argv(m.cmd.Process.Pid); !strings.Contains(strings.Join(args, " "), " -sf "+strconv.Itoa(first[0])) {
		t.Fatalf("the reload did not re-execute the master: %q", args)
	}
	e2etest.WaitFor(t, 30*time.Second, "the old worker to exit", func() bool {
		return syscall.Kill(first[0], 0) != nil
	})
	m.cmd.Process.Signal(syscall.SIGTERM)
	m.waitExit(30 * time.Second)
	<-outDone

	tag := fmt.Sprintf("[g1 s0 p%d] ", first[0])
	next, bye := 0, false
	for _, l := range *stdout {
		text, ok := strings.CutPrefix(l, tag)
		if !ok {
			continue
		}
		if n, ok := strings.CutPrefix(text, "bye "); ok {
			if n != strconv.Itoa(next) {
				t.Errorf("last line %q after tick %d", text, next-1)
			}
			bye = true
			continue
		}
		if text != "tick "+strconv.Itoa(next) {
			t.Fatalf("line %q where tick %d was due (a line lost or split across the re-exec)", l, next)
		}
		next++
	}
	if !bye || next < 50 {
		t.Errorf("the old worker's lines: %d ticks, last line seen %v", next, bye)
	}
}
