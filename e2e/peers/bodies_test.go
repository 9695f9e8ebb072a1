package peers

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// argvFn builds a supervisor's command line around cmd, with its flags.
type argvFn func(flags []string, cmd ...string) []string

// mwArgv is "mworker run --restart no --stop-timeout 3s FLAGS -- CMD", as
// issue 17 ported the cases.
func mwArgv(flags []string, cmd ...string) []string {
	a := []string{mworkerPath, "run", "--restart", "no", "--stop-timeout", "3s"}
	a = append(a, flags...)
	return append(append(a, "--"), cmd...)
}

func tiniArgv(flags []string, cmd ...string) []string {
	a := append([]string{"tini"}, flags...)
	return append(append(a, "--"), cmd...)
}

// dumbArgv is dumb-init in its default (setsid) mode; flags may start
// with "env", "DUMB_INIT_SETSID=0" (see dumbNoSetsid).
func dumbArgv(flags []string, cmd ...string) []string {
	a := append([]string{"dumb-init"}, flags...)
	return append(a, cmd...)
}

// dumbNoSetsid is dumb-init with DUMB_INIT_SETSID=0 (its suite's
// setsid_disabled fixture).
func dumbNoSetsid(flags []string, cmd ...string) []string {
	return append([]string{"env", "DUMB_INIT_SETSID=0"}, dumbArgv(flags, cmd...)...)
}

// with fixes a supervisor's flags.
func with(f argvFn, flags ...string) func(cmd ...string) []string {
	return func(cmd ...string) []string { return f(flags, cmd...) }
}

var allCodes = flag.Bool("peers.allcodes", false, "the exit-code cases run every code 0..255, as tini's suite does, instead of 42 of them (about 25 s more on 2 cores)")

// exitCodeSet is the codes the exit-code cases run: every eighth and the
// edges (shell, signal and SIGTERM statuses), or all 256.
func exitCodeSet() []int {
	var codes []int
	for c := 0; c < 256; c++ {
		if *allCodes || c%8 == 0 || slices.Contains([]int{1, 2, 3, 126, 127, 129, 130, 131, 134, 137, 139, 143, 254, 255}, c) {
			codes = append(codes, c)
		}
	}
	return codes
}

// exitCodes runs argv(code) for each code of exitCodeSet and checks the
// status. Shells run them, a quarter of the codes each, and print each
// status: hundreds of processes forked from this (race-instrumented) test
// process would take much longer.
func exitCodes(t *testing.T, r *run, argv func(code int) []string, want func(code int) int) {
	codes := exitCodeSet()
	var ps []*proc
	for q := 0; q < 4; q++ {
		var b strings.Builder
		for i := q; i < len(codes); i += 4 {
			for _, a := range argv(codes[i]) {
				b.WriteString("'" + a + "' ")
			}
			fmt.Fprintf(&b, ">/dev/null 2>&1; echo %d $?\n", codes[i])
		}
		script := r.path(fmt.Sprintf("codes.%d.sh", q))
		if err := os.WriteFile(script, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, r.startPlain("/bin/sh", script))
	}
	have := map[int]int{}
	for _, p := range ps {
		p.wait(t, 50*time.Second)
		for line := range strings.SplitSeq(p.stdout(), "\n") {
			var c, st int
			if n, _ := fmt.Sscan(line, &c, &st); n == 2 {
				have[c] = st
			}
		}
	}
	var bad []string
	for _, code := range codes {
		if st, ok := have[code]; !ok || st != want(code) {
			bad = append(bad, fmt.Sprintf("exit %d: status %d (ran: %v), want %d", code, st, ok, want(code)))
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d codes wrong:\n%s", len(bad), len(codes), strings.Join(bad, "\n"))
	}
}

func sh(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script, "sh"}, args...)
}

// release lets a worker blocked in "read x < FIFO" go on.
func release(t *testing.T, fifo string) {
	t.Helper()
	var f *os.File
	e2etest.WaitFor(t, 10*time.Second, "the worker's fifo reader", func() bool {
		var err error
		f, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		return err == nil
	})
	f.WriteString("go\n")
	f.Close()
}

func (r *run) fifo(name string) string {
	r.t.Helper()
	path := r.path(name)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// readPid waits for a pid a worker wrote to path.
func readPid(t *testing.T, p *proc, path string) int {
	t.Helper()
	var pid int
	e2etest.WaitFor(t, 20*time.Second, "a pid in "+path, func() bool {
		b, err := os.ReadFile(path)
		if err == nil {
			fmt.Sscan(string(b), &pid)
		}
		return pid != 0 || p.exited()
	})
	if pid == 0 {
		t.Fatalf("supervisor exited (status %d) before the worker wrote its pid; stderr:\n%s", p.status, p.stderr())
	}
	return pid
}

// reapWorker is tini's reaping stages: a shell starts 100 sleeps of 1 to
// 3 s and exits, orphaning them; the worker writes its pid to $1 and waits
// on the fifo $2, then exits 0.
const reapWorker = `sh -c 'i=0; while [ $i -lt 100 ]; do sleep "$((1 + i % 2)).$((i % 10))" & i=$((i + 1)); done'
echo $$ > "$1.tmp" && mv "$1.tmp" "$1"
read x < "$2"
exit 0
`

// reaping runs tini's reaping test under argv: once the init's only
// descendant is the worker (every orphan exited and reaped, zombies
// count), no process but the worker is left in its process group, and the
// init exits 0. With clean false it checks the opposite, as tini's
// "zombie reaping failure test" does: the orphans left the init's tree
// at once, still alive in the worker's group, not the init's to reap.
func reaping(t *testing.T, r *run, argv func(cmd ...string) []string, clean bool) *proc {
	fifo := r.fifo("go")
	pidf := r.path("worker.pid")
	p := r.start(argv(sh(reapWorker, pidf, fifo)...)...)
	w := readPid(t, p, pidf)
	var desc []int
	if !e2etest.Poll(20*time.Second, func() bool {
		desc = descendants(p.pid)
		return slices.Equal(desc, []int{w}) || p.exited()
	}) || p.exited() {
		t.Fatalf("the init's descendants never came down to the worker %d: %v (init exited: %v, status %d)", w, desc, p.exited(), p.status)
	}
	ws, _ := statOf(w)
	var left []int
	for pid, s := range allStats() {
		if s.pgid == ws.pgid && pid != w {
			left = append(left, pid)
		}
	}
	switch {
	case clean && len(left) > 0:
		t.Errorf("processes left in the worker's group, not reaped: %v", left)
	case !clean && len(left) == 0:
		t.Errorf("no orphan left in the worker's group right after they were orphaned: want them outside the init's tree, still running")
	}
	release(t, fifo)
	if st := p.wait(t, 10*time.Second); st != 0 {
		t.Errorf("init exit status %d, want 0; stderr:\n%s", st, p.stderr())
	}
	return p
}

// reapDisplay: a worker orphans a short sleep; the init says it reaped it.
func reapDisplay(t *testing.T, r *run, argv func(cmd ...string) []string, want string) {
	p := r.start(argv(sh(`sh -c 'sleep 0.1 &'; sleep 1; exit 0`)...)...)
	if st := p.wait(t, 10*time.Second); st != 0 {
		t.Errorf("exit status %d, want 0", st)
	}
	if !strings.Contains(p.stderr(), want) {
		t.Errorf("stderr has no %q:\n%s", want, p.stderr())
	}
}

// waitTree waits until the init has at least n live descendants.
func waitTree(t *testing.T, p *proc, n int) []int {
	t.Helper()
	var d []int
	e2etest.WaitFor(t, 20*time.Second, fmt.Sprintf("%d processes under the init", n), func() bool {
		d = liveDescendants(p.pid)
		return len(d) >= n || p.exited()
	})
	if p.exited() {
		t.Fatalf("init exited (status %d) early; stderr:\n%s", p.status, p.stderr())
	}
	return d
}

// signalExit: the child (a shell waiting for a sleep) dies of sig sent to
// the init, and the init exits with 128 + sig.
func signalExit(t *testing.T, r *run, argv func(cmd ...string) []string, sig syscall.Signal, want int) {
	p := r.start(argv(sh(`sleep 100; exit 0`)...)...)
	waitTree(t, p, 2)
	p.signal(t, sig)
	if st := p.wait(t, 10*time.Second); st != want {
		t.Errorf("exit status %d after signal %d, want %d; stderr:\n%s", st, sig, want, p.stderr())
	}
}

// reloadOn: sig sent to the master starts a new generation: a new worker
// replaces the first, and the master runs on.
func reloadOn(t *testing.T, r *run, sig syscall.Signal) {
	p := r.start(mwArgv(nil, "sleep", "1000")...)
	first := waitTree(t, p, 1)[0]
	p.signal(t, sig)
	var d []int
	if !e2etest.Poll(20*time.Second, func() bool {
		d = liveDescendants(p.pid)
		return p.exited() || (len(d) == 1 && d[0] != first)
	}) || p.exited() {
		t.Fatalf("after signal %d: workers %v (first %d), master exited %v; stderr:\n%s", sig, d, first, p.exited(), p.stderr())
	}
	if !strings.Contains(p.stderr(), "generation=2") {
		t.Errorf("no generation 2 in the log:\n%s", p.stderr())
	}
	p.signal(t, syscall.SIGTERM)
	p.wait(t, 10*time.Second)
}

// pgroup is tini's process group test: the child catches sig and waits
// for its own child, a sleep, which dies of the signal sent to the init
// (when it reaches the group); then the child exits 7, and so does the
// init.
func pgroup(t *testing.T, r *run, argv func(cmd ...string) []string, sig syscall.Signal) {
	p := r.start(argv(sh(fmt.Sprintf(`trap : %d; sleep 1000 & wait; wait; exit 7`, sig))...)...)
	waitTree(t, p, 2)
	// The sleep must have been exec'd: a signal that reaches the shell's
	// forked child before it resets the trap runs the trap there, the
	// sleep then starts untouched and the shell waits for it for ever
	// (dumb-init's column, once under load).
	e2etest.WaitFor(t, 20*time.Second, "the sleep exec'd", func() bool {
		return p.exited() || slices.ContainsFunc(liveDescendants(p.pid), func(pid int) bool {
			pr, _ := e2etest.ReadProc(pid)
			return pr.Comm == "sleep"
		})
	})
	p.signal(t, sig)
	if st := p.wait(t, 10*time.Second); st != 7 {
		t.Errorf("init exit status %d, want 7 (the child's); stderr:\n%s", st, p.stderr())
	}
}

// childSigs runs "cat /proc/self/status" under argv, the init started with
// spec's dispositions and mask, and returns the child's SigIgn and SigBlk.
func childSigs(t *testing.T, r *run, argv func(cmd ...string) []string, spec string) (ign, blk uint64) {
	p := r.startSigs(spec, argv("cat", "/proc/self/status")...)
	if st := p.wait(t, 10*time.Second); st != 0 {
		t.Fatalf("exit status %d; stderr:\n%s", st, p.stderr())
	}
	out := p.stdout()
	var err1, err2 error
	ign, err1 = sigField(out, "SigIgn")
	blk, err2 = sigField(out, "SigBlk")
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	return ign, blk
}

// checkSigs: want says, for each signal, whether the child has it.
func checkSigs(t *testing.T, what string, set uint64, want map[int]bool) {
	t.Helper()
	for n, w := range want {
		if has := set&sigBit(n) != 0; has != w {
			t.Errorf("%s: signal %d present %v, want %v (set %016x)", what, n, has, w, set)
		}
	}
}

// pipeline is dumb-init's group test, with sleep | cat for yes | tail (the
// same tree, without two processes spinning on the CPU).
const pipeline = `sleep 1000 | cat & sleep 1000 | cat >&2`

// groupTerm starts the pipeline (the init's child shell and four), sends
// the init SIGTERM, and waits until live of those five are left and the
// init has exited.
func groupTerm(t *testing.T, r *run, argv func(cmd ...string) []string, live int) {
	p := r.start(argv(sh(pipeline)...)...)
	pids := waitTree(t, p, 5)
	p.signal(t, syscall.SIGTERM)
	var left []int
	if !e2etest.Poll(10*time.Second, func() bool {
		left = left[:0]
		for _, pid := range pids {
			if alive(pid) {
				left = append(left, pid)
			}
		}
		return p.exited() && len(left) == live
	}) {
		t.Errorf("after SIGTERM: %d of %v alive, want %d (init exited: %v)", len(left), pids, live, p.exited())
	}
}

// orphanSigs is dumb-init's child_processes_test "dies with children": the
// child starts the recorder in the background (detached with setsid when
// detach), waits for its traps, and exits 0. The init exits 0; term says
// whether the recorder got SIGTERM, killed whether SIGKILL ended it after;
// else it then gets 1, 2, 3 sent to it alone.
func orphanSigs(t *testing.T, r *run, argv func(cmd ...string) []string, detach, term, killed bool) {
	rec := r.writeRecorder()
	gotf := r.path("got")
	// A background job of a shell starts with SIGINT and SIGQUIT ignored,
	// which a shell cannot trap: the launcher resets them.
	bg := `env ` + envLaunch + `= "$2" "$0" "$1" 1 2 3 15 &`
	if detach {
		bg = `setsid ` + bg
	}
	p := r.start(argv(append([]string{"/bin/sh", "-c", bg + ` while [ ! -s "$1" ]; do sleep 0.01; done; exit 0`}, rec, gotf, selfPath)...)...)
	pid := waitReady(t, p, gotf)
	if st := p.wait(t, 15*time.Second); st != 0 {
		t.Errorf("init exit status %d, want 0; stderr:\n%s", st, p.stderr())
	}
	var want []int
	if term {
		want = []int{15}
		waitGot(t, gotf, want...)
	}
	if killed {
		// mworker sends it SIGKILL --stop-timeout after the SIGTERM, and
		// exits once it has sent it (the SIGKILL may still be on its way).
		e2etest.WaitFor(t, 10*time.Second, "the recorder's end by SIGKILL", func() bool { return !alive(pid) })
		return
	}
	if !alive(pid) {
		t.Fatalf("the recorder %d is gone", pid)
	}
	defer func() {
		if t.Failed() {
			s, _ := statOf(pid)
			t.Logf("recorder %d: %+v; init's stderr:\n%s", pid, s, p.stderr())
		}
	}()
	for _, s := range []syscall.Signal{1, 2, 3} {
		syscall.Kill(pid, s)
		want = append(want, int(s))
		waitGot(t, gotf, want...)
	}
}

// proxies starts the recorder trapping traps under argv, sends the init
// each of send in turn, and checks the recorder got want[i] after send[i]
// (0: nothing, checked by the next signal's arrival).
func proxies(t *testing.T, r *run, argv func(cmd ...string) []string, traps []int, send, want []int) *proc {
	rec := r.writeRecorder()
	gotf := r.path("got")
	args := []string{rec, gotf}
	for _, n := range traps {
		args = append(args, fmt.Sprint(n))
	}
	p := r.start(argv(args...)...)
	waitReady(t, p, gotf)
	var have []int
	for i, s := range send {
		p.signal(t, syscall.Signal(s))
		if want[i] != 0 {
			have = append(have, want[i])
			waitGot(t, gotf, have...)
		}
	}
	if p.exited() {
		t.Errorf("init exited (status %d); stderr:\n%s", p.status, p.stderr())
	}
	return p
}

// cli runs the init with args and checks its status and that its output
// (stdout and stderr) has each of has.
func cli(t *testing.T, r *run, argv []string, status int, has ...string) {
	p := r.start(argv...)
	st := p.wait(t, 10*time.Second)
	out := p.stdout() + p.stderr()
	if (status < 0 && st == 0) || (status >= 0 && st != status) {
		t.Errorf("%q: status %d, want %d (-1: not 0); output:\n%s", argv, st, status, out)
	}
	for _, h := range has {
		if !strings.Contains(out, h) {
			t.Errorf("%q: output has no %q:\n%s", argv, h, out)
		}
	}
}
