package osadapter

import (
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

func spawnedPids(f *fakeOS) []int {
	var pids []int
	for _, s := range f.spawns {
		pids = append(pids, s.pid)
	}
	return pids
}

func TestKillGoesToProcessGroupsAndNeverToPidZero(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	if got := spawnedPids(f); !slices.Equal(got, []int{100, 101}) {
		t.Fatalf("spawned %v, want [100 101]", got)
	}
	l.step(fsm.SignalReceived{Signal: fsm.SIGWINCH})
	want := []fakeKill{{-100, syscall.SIGWINCH}, {-101, syscall.SIGWINCH}}
	if !slices.Equal(f.kills, want) {
		t.Fatalf("forwarded SIGWINCH as %v, want %v", f.kills, want)
	}

	// The core never asks for pid <= 0; the adapter refuses it anyway,
	// since kill(0) and kill(-1) would hit the master's group or everything.
	f.kills = nil
	l.perform(fsm.Kill{Pids: []int{0, -1, 101}, Signal: fsm.SIGTERM})
	l.perform(fsm.SignalPids{Pids: []int{0, -7, 555}, Signal: fsm.SIGUSR1})
	want = []fakeKill{{-101, syscall.SIGTERM}, {555, syscall.SIGUSR1}}
	if !slices.Equal(f.kills, want) {
		t.Fatalf("kills %v, want %v", f.kills, want)
	}
}

func TestKillFallsBackToPidWhenGroupIsGone(t *testing.T) {
	f := newFakeOS()
	f.killErr = func(pid int) error {
		if pid < 0 {
			return syscall.ESRCH
		}
		return nil
	}
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.perform(fsm.Kill{Pids: []int{300}, Signal: fsm.SIGTERM})
	want := []fakeKill{{-300, syscall.SIGTERM}, {300, syscall.SIGTERM}}
	if !slices.Equal(f.kills, want) {
		t.Fatalf("kills %v, want %v", f.kills, want)
	}
}

func TestSpawnAttributes(t *testing.T) {
	f := newFakeOS()
	f.env = append(f.env, "NOTIFY_SOCKET=/run/x", "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b",
		"MWORKER_TRAMPOLINE=x", "MWORKER_CONTROL_FD=5", "MWORKER_GENERATION=9", "MWORKER_SLOT=9", "KEEP=1")
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.ignored = nil
	l.start()
	if len(f.spawns) != 2 {
		t.Fatalf("%d spawns, want 2", len(f.spawns))
	}
	s := f.spawns[1]
	if s.argv0 != "/bin/worker" || !slices.Equal(s.argv, []string{"/bin/worker", "-x"}) {
		t.Errorf("spawned %q %q, want the command itself", s.argv0, s.argv)
	}
	if !s.attr.Sys.Setpgid || s.attr.Sys.Pgid != 0 {
		t.Errorf("worker not in its own process group: %+v", s.attr.Sys)
	}
	if s.attr.Sys.Pdeathsig != deathSignal {
		t.Errorf("Pdeathsig = %v, want %v", s.attr.Sys.Pdeathsig, deathSignal)
	}
	if !slices.Equal(s.attr.Files, []uintptr{0, 1, 2}) {
		t.Errorf("files %v, want stdin, stdout, stderr", s.attr.Files)
	}
	want := []string{"PATH=/bin", "HOME=/root", "KEEP=1", "MWORKER_GENERATION=1", "MWORKER_SLOT=1"}
	if !slices.Equal(s.attr.Env, want) {
		t.Errorf("worker env %q, want %q", s.attr.Env, want)
	}
}

func TestSpawnThroughTrampolineWithListeners(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	fakeListeners(t, f, l, []string{"web", "admin"}, 7, 9)
	l.ignored = []syscall.Signal{syscall.SIGHUP}
	l.start()
	s := f.spawns[0]
	if s.argv0 != "/proc/self/exe" || s.argv[0] != "/bin/worker" {
		t.Errorf("spawned %q %q, want the trampoline running the command's argv", s.argv0, s.argv)
	}
	if !slices.Equal(s.attr.Files, []uintptr{0, 1, 2, 7, 9}) {
		t.Errorf("files %v, want listeners as 3 and 4", s.attr.Files)
	}
	for _, kv := range []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin", "MWORKER_TRAMPOLINE=ign=1;mask=0;path=/bin/worker"} {
		if !slices.Contains(s.attr.Env, kv) {
			t.Errorf("worker env %q lacks %q", s.attr.Env, kv)
		}
	}
	// What the trampoline then gives the command.
	env := trampolineEnv(s.attr.Env, 12345)
	if !slices.Contains(env, "LISTEN_PID=12345") || slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "MWORKER_TRAMPOLINE=") }) {
		t.Errorf("trampoline env %q: want LISTEN_PID=12345 and no MWORKER_TRAMPOLINE", env)
	}
	path, ign, mask, err := parseTrampolineSpec("ign=1,2;mask=4008;path=/a;b=c")
	if err != nil || path != "/a;b=c" || !slices.Equal(ign, []syscall.Signal{1, 2}) || mask != 0x4008 {
		t.Errorf("parseTrampolineSpec = %q %v %x %v", path, ign, mask, err)
	}
	for _, bad := range []string{"ign=x;mask=0;path=/a", "ign=1;mask=zz;path=/a", "ign=1;path=/a"} {
		if _, _, _, err := parseTrampolineSpec(bad); err == nil {
			t.Errorf("parseTrampolineSpec accepted %q", bad)
		}
	}
}

func TestReapingFeedsExitsAndNoChildren(t *testing.T) {
	f := newFakeOS()
	l, logs := fakeLoop(t, f, Config{Machine: fsm.Config{Workers: 2, Restart: fsm.RestartNo}}, nil)
	l.start()
	f.exited(777, 0) // an orphan: reaped, not counted
	f.killed(101, syscall.SIGSEGV)
	l.onSignal(syscall.SIGCHLD)
	if !strings.Contains(logs.String(), "reaped unknown child") || !strings.Contains(logs.String(), "pid=777") {
		t.Errorf("orphan 777 not reaped:\n%s", logs)
	}
	// --restart no: the crash ends the run; 100 is told to stop.
	if !slices.Contains(f.kills, fakeKill{-100, syscall.SIGTERM}) {
		t.Fatalf("kills %v: want SIGTERM to the group of 100", f.kills)
	}
	if l.exited {
		t.Fatalf("exited while worker 100 is alive:\n%s", logs)
	}
	f.exited(100, 0)
	l.onSignal(syscall.SIGCHLD)
	if !l.exited || l.status != 128+11 {
		t.Fatalf("exited=%v status=%d, want the crashed worker's 139", l.exited, l.status)
	}
}

func TestReapLoopStopsAtZeroAndReportsECHILD(t *testing.T) {
	f := newFakeOS()
	l, logs := fakeLoop(t, f, Config{}, nil)
	l.start()
	// ECHILD while two workers are known: the core warns about it.
	f.live = map[int]bool{}
	l.reap()
	if !strings.Contains(logs.String(), "wait4 reports no children") {
		t.Errorf("NoChildren not fed on ECHILD:\n%s", logs)
	}
	f.waits = []fakeWait{{0, 0}, {101, 0}}
	l.reap()
	if len(f.waits) != 1 {
		t.Errorf("reap went past a wait4 that returned 0")
	}
}

// reload drives the loop through a reload and returns the state it handed
// to the next image.
func reload(t *testing.T, f *fakeOS, l *loop) *execState {
	t.Helper()
	n := len(f.execs)
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != n+1 || !l.replace {
		t.Fatalf("no exec after SIGUSR2 (calls %v)", f.calls)
	}
	v, ok := lookupEnv(f.execs[n].env, envState)
	if !ok {
		t.Fatalf("exec env lacks %s", envState)
	}
	st, err := decodeState(v)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestTimersSurviveReexecAtTheirDeadline(t *testing.T) {
	f := newFakeOS()
	f.mask = sigset(syscall.SIGWINCH) // the mask mworker was started with
	a, _ := fakeLoop(t, f, Config{}, nil)
	a.start() // gen 1: 100, 101
	st := reload(t, f, a)
	if !slices.Equal(f.execs[0].argv, []string{"mworker", "run", "-sf", "100", "101", "--", "/bin/worker", "-x"}) {
		t.Errorf("exec argv %q", f.execs[0].argv)
	}

	// Image B: gen 2 (102, 103) is ready at once, gen 1 is told to stop
	// and gets a kill timer 10 s from now.
	f.env = f.execs[0].env
	f.now += 1e9
	b, _ := fakeLoop(t, f, Config{}, nil)
	if f.mask != sigset(syscall.SIGWINCH) {
		t.Errorf("mask after re-exec %v, want the first start's", f.mask.Val[0])
	}
	b.start()
	for _, s := range f.spawns[2:] {
		for _, kv := range s.attr.Env {
			if strings.HasPrefix(kv, envState+"=") {
				t.Errorf("worker %d of the new image sees %s", s.pid, envState)
			}
		}
	}
	if !slices.Contains(f.kills, fakeKill{-100, syscall.SIGTERM}) {
		t.Fatalf("old worker 100 not told to stop: %v", f.kills)
	}
	killAt := f.now + 10e9
	kt := fsm.Timer{Kind: fsm.TimerKill, Generation: 1}
	if b.timers[kt] != killAt {
		t.Fatalf("kill timer at %d, want %d", b.timers[kt], killAt)
	}

	// Image C: exec'd 2 s later; the kill timer keeps its deadline.
	f.now += 2e9
	st = reload(t, f, b)
	f.env = f.execs[1].env
	f.now += 1e9
	c, _ := fakeLoop(t, f, Config{}, nil)
	_ = st
	c.start()
	if c.timers[kt] != killAt {
		t.Fatalf("after re-exec the kill timer is at %d, want the original %d", c.timers[kt], killAt)
	}
	f.kills = nil
	f.now = killAt - 1
	c.fireDue()
	if slices.Contains(f.kills, fakeKill{-100, syscall.SIGKILL}) {
		t.Fatal("SIGKILL before the deadline")
	}
	f.now = killAt
	c.fireDue()
	for _, pid := range []int{-100, -101} {
		if !slices.Contains(f.kills, fakeKill{pid, syscall.SIGKILL}) {
			t.Errorf("no SIGKILL to %d at the original deadline: %v", pid, f.kills)
		}
	}
	if at, ok := c.nextDeadline(); ok && at <= killAt {
		t.Errorf("a timer is still due at %d", at)
	}
}

func TestExecFailureRestoresSignalsAndKeepsWorkers(t *testing.T) {
	f := newFakeOS()
	f.execErr = syscall.EACCES
	sigs := make(chan os.Signal, 4)
	l, logs := fakeLoop(t, f, Config{}, sigs)
	l.start()
	before := f.mask
	f.calls = nil
	sigs <- syscall.SIGWINCH // read by the exec's drain, acted on after the failure
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})

	usr := sigset(syscall.SIGUSR1, syscall.SIGUSR2).Val[0]
	held := strconv.FormatUint(sigset(execHeld...).Val[0], 16)
	want := []string{
		"sigmask block " + itoa(int(usr)),
		"ignore 1",
		"exec /usr/bin/mworker held " + held,
		"unblock all " + held,
		"catch 1",
		"sigmask set " + itoa(int(before.Val[0])),
		"kill -100 28", "kill -101 28",
	}
	if !slices.Equal(f.calls, want) {
		t.Fatalf("calls\n%q\nwant\n%q", f.calls, want)
	}
	if f.mask != before {
		t.Errorf("mask %v after failed exec, want %v", f.mask.Val[0], before.Val[0])
	}
	if l.m.State() != "running" || l.done() {
		t.Fatalf("state %s done=%v after exec failure, want running", l.m.State(), l.done())
	}
	if !strings.Contains(logs.String(), "reload failed") || !strings.Contains(logs.String(), "permission denied") {
		t.Errorf("exec failure not logged:\n%s", logs)
	}
	// Still obeys signals: a second reload is attempted.
	l.step(fsm.SignalReceived{Signal: fsm.SIGHUP})
	if len(f.execs) != 2 {
		t.Errorf("%d execs, want a second attempt", len(f.execs))
	}
}

func TestSignalsReadBeforeExecReachTheNewImage(t *testing.T) {
	f := newFakeOS()
	sigs := make(chan os.Signal, 4)
	a, _ := fakeLoop(t, f, Config{}, sigs)
	a.start()
	sigs <- syscall.SIGCHLD
	sigs <- syscall.SIGTERM
	reload(t, f, a)
	v, _ := lookupEnv(f.execs[0].env, envCarried)
	if _, sigs, err := parseCarried(v); err != nil || !slices.Equal(sigs, []syscall.Signal{syscall.SIGTERM}) {
		t.Fatalf("%s=%q carries %v (%v), want [SIGTERM]", envCarried, v, sigs, err)
	}
	f.env = f.execs[0].env
	f.kills = nil
	b, _ := fakeLoop(t, f, Config{}, nil)
	b.start()
	for _, pid := range []int{-100, -101, -102, -103} {
		if !slices.Contains(f.kills, fakeKill{pid, syscall.SIGTERM}) {
			t.Errorf("SIGTERM read before the exec did not reach %d: %v", pid, f.kills)
		}
	}
	if b.m.State() != "exiting" {
		t.Errorf("state %s, want exiting", b.m.State())
	}
}

func TestStateTooLargeFailsTheReload(t *testing.T) {
	st := &execState{Path: strings.Repeat("x", maxStateLen)}
	if _, err := st.encode(); err == nil || !strings.Contains(err.Error(), "--workers") {
		t.Fatalf("encode of an oversized state: %v", err)
	}
}

func TestWorkersOf1024FitInTheState(t *testing.T) {
	st := &execState{Path: "/usr/local/bin/mworker"}
	for i := range 2048 {
		st.Handover.Workers = append(st.Handover.Workers, fsm.HandoverWorker{Pid: 4_000_000 + i, Generation: 1 + i/1024, Slot: i % 1024, Ready: true})
		st.Handover.Timers = append(st.Handover.Timers, fsm.Timer{Kind: fsm.TimerStable, Pid: 4_000_000 + i})
		st.Deadlines = append(st.Deadlines, 1<<62+int64(i))
	}
	enc, err := st.encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeState(enc)
	if err != nil || len(back.Handover.Workers) != 2048 || back.Deadlines[2047] != 1<<62+2047 {
		t.Fatalf("round trip: %v", err)
	}
	t.Logf("2048 workers and timers: %d bytes", len(enc))
}

func TestStartErrors(t *testing.T) {
	f := newFakeOS()
	var buf strings.Builder
	if st := run(Config{LogFormat: "xml", Command: []string{"/bin/true"}}, f.os(), nil, nil, nil); st != 1 {
		t.Errorf("status %d for a bad log format, want 1", st)
	}
	cfg := Config{Command: []string{"/bin/true"}, Stderr: &buf, Machine: fsm.Config{Workers: 1, Path: "/x", ReadyTimeout: time.Second, StopTimeout: time.Second, StopSignal: 15},
		PidFile: t.TempDir() + "/no/such/dir/pid"}
	if st := run(cfg, f.os(), nil, nil, nil); st != 1 || strings.Count(buf.String(), "\n") != 1 || !strings.HasPrefix(buf.String(), "mworker: cannot write --pidfile "+cfg.PidFile+": ") {
		t.Errorf("status %d, stderr %q: want 1 and one line about the pid file", st, buf.String())
	}
}

func TestPrepareExecAddsEnvAndIsUndoneOnFailure(t *testing.T) {
	f := newFakeOS()
	f.env = append(f.env, "MWORKER_CONTROL_FD=7")
	f.execErr = syscall.ENOENT
	undone := 0
	var got fsm.Handover
	cfg := Config{PrepareExec: func(h fsm.Handover) ([]string, func(), error) {
		got = h
		return []string{"MWORKER_CONTROL_FD=9"}, func() { undone++ }, nil
	}}
	l, _ := fakeLoop(t, f, cfg, nil)
	l.start()
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 1 {
		t.Fatalf("%d execs, want 1", len(f.execs))
	}
	env := f.execs[0].env
	if !slices.Contains(env, "MWORKER_CONTROL_FD=9") || slices.Contains(env, "MWORKER_CONTROL_FD=7") {
		t.Errorf("exec env %q: want MWORKER_CONTROL_FD=9 replacing =7", env)
	}
	if len(got.Workers) != 2 {
		t.Errorf("PrepareExec got %d workers in the handover, want 2", len(got.Workers))
	}
	if undone != 1 {
		t.Errorf("undo called %d times after a failed execve, want 1", undone)
	}

	// A PrepareExec error fails the reload without an execve.
	l.prepareExec = func(fsm.Handover) ([]string, func(), error) { return nil, nil, syscall.EMFILE }
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 1 || l.m.State() != "running" {
		t.Errorf("execs %d, state %s: want no execve and running", len(f.execs), l.m.State())
	}
}

// The select loop itself: a crashing worker is reaped on SIGCHLD, restarted
// when its backoff timer fires, and SIGTERM ends the run with the status of
// the last worker.
func TestRunLoopRestartsOnTimerAndExits(t *testing.T) {
	f := newFakeOS()
	sys := f.os()
	sys.Now = monotonicNow // the loop's timer waits in real time
	sigs := make(chan os.Signal, 16)
	spawnedAt := map[int]time.Time{}
	f.onSpawn = func(pid int) {
		spawnedAt[pid] = time.Now()
		switch pid {
		case 100: // crashes at once
			f.exited(100, 1)
			sigs <- syscall.SIGCHLD
		case 101: // runs until the operator's SIGTERM
			sigs <- syscall.SIGTERM
		}
	}
	f.onKill = func(pid int, sig syscall.Signal) {
		if pid == -101 && sig == syscall.SIGTERM {
			f.killed(101, syscall.SIGTERM)
			sigs <- syscall.SIGCHLD
		}
	}
	cfg := Config{Command: []string{"/bin/worker"}, LogLevel: -4, Stderr: io.Discard, Machine: fsm.Config{
		Workers: 1, Path: "/usr/bin/mworker", Argv: []string{"mworker"},
		ReadyTimeout: time.Second, StopTimeout: time.Second, StopSignal: fsm.SIGTERM,
		Backoff: fsm.Backoff{Min: 100 * time.Millisecond, Max: time.Second, Reset: time.Minute},
	}}
	done := make(chan int, 1)
	go func() { done <- run(cfg, sys, sigs, nil, nil) }()
	select {
	case st := <-done:
		if st != 143 {
			t.Errorf("run returned %d, want 143", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return")
	}
	if len(spawnedAt) != 2 {
		t.Fatalf("%d spawns, want 2", len(spawnedAt))
	}
	// Run seeds the jitter: the 100ms backoff is drawn in [50ms, 100ms).
	if d := spawnedAt[101].Sub(spawnedAt[100]); d < 50*time.Millisecond {
		t.Errorf("restarted after %v, before the 100ms backoff jittered to no less than half", d)
	}
}

// The machine hears of a spawn's outcome only once every action of the
// list that asked for it is done (fsm duties 2 and 3), in spawn order.
func TestSpawnOutcomesFollowTheWholeActionList(t *testing.T) {
	f := newFakeOS()
	l, log := fakeLoop(t, f, Config{}, nil)
	var heldAtSpawn []string
	f.onSpawn = func(pid int) {
		l.out.mu.Lock()
		heldAtSpawn = append(heldAtSpawn, l.out.buf.String())
		l.out.mu.Unlock()
	}
	l.start()
	if len(heldAtSpawn) != 2 {
		t.Fatalf("%d spawns, want 2", len(heldAtSpawn))
	}
	if strings.Contains(heldAtSpawn[1], "worker started") {
		t.Fatalf("the machine was told of the first worker before the second was spawned:\n%s", heldAtSpawn[1])
	}
	logs := log.String()
	i, j := strings.Index(logs, "pid=100"), strings.Index(logs, "pid=101")
	if i < 0 || j < 0 || i > j {
		t.Fatalf("outcomes not fed in spawn order:\n%s", logs)
	}
}
