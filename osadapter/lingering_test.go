package osadapter

import (
	"slices"
	"syscall"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// groupKernel plays a kernel with the process groups in members (pgid ->
// count) and the live pids in alive: kill(pid, _) fails with ESRCH unless
// alive, kill(-pgid, _) unless the group has members; SIGKILL empties a
// group.
func groupKernel(f *fakeOS, alive map[int]bool, members map[int]int) {
	f.killErr = func(pid int) error {
		if pid < 0 {
			if members[-pid] == 0 {
				return syscall.ESRCH
			}
			return nil
		}
		if !alive[pid] {
			return syscall.ESRCH
		}
		return nil
	}
	f.onKill = func(pid int, sig syscall.Signal) {
		if pid < 0 && sig == syscall.SIGKILL {
			delete(members, -pid)
		}
	}
}

func TestLeftoverGroupGetsStopSignalThenKill(t *testing.T) {
	f := newFakeOS()
	alive := map[int]bool{100: true, 101: true}
	members := map[int]int{100: 2, 101: 1}
	groupKernel(f, alive, members)
	l, _ := fakeLoop(t, f, Config{Machine: fsm.Config{Workers: 2, StopSignal: fsm.SIGINT}}, nil)
	l.start()

	// Worker 100 exits and leaves a child in its group; 101 exits alone.
	delete(alive, 100)
	members[100] = 1
	delete(alive, 101)
	delete(members, 101)
	f.kills = nil
	f.exited(100, 3)
	f.exited(101, 3)
	l.reap()
	var got []fakeKill
	for _, k := range f.kills {
		if k.pid == -100 || k.pid == -101 {
			got = append(got, k)
		}
	}
	want := []fakeKill{{-100, syscall.SIGINT}, {-101, syscall.SIGINT}}
	if !slices.Equal(got, want) {
		t.Fatalf("group signals after the exits %v (all kills %v), want %v", got, f.kills, want)
	}
	deadline, ok := l.lingerNext()
	if !ok || deadline != f.now+10e9 || len(l.linger.groups) != 1 {
		t.Fatalf("lingering %v, want group 100 at now+10s", l.linger.groups)
	}

	// Not yet due: nothing; due: SIGKILL, once.
	f.now = deadline - 1
	f.kills = nil
	l.lingerDue()
	if len(f.kills) != 0 {
		t.Fatalf("kills before the deadline: %v", f.kills)
	}
	f.now = deadline
	l.lingerDue()
	if !slices.Contains(f.kills, fakeKill{-100, syscall.SIGKILL}) {
		t.Fatalf("no SIGKILL to the group at the deadline: %v", f.kills)
	}
	if len(l.linger.groups) != 0 {
		t.Fatalf("group still tracked after SIGKILL: %v", l.linger.groups)
	}
}

// The group id is the worker's pid: once another process has that pid,
// the old group is gone and the number is never signalled.
func TestLeftoverGroupNotSignalledWhenPidReused(t *testing.T) {
	f := newFakeOS()
	alive := map[int]bool{100: true, 101: true}
	members := map[int]int{100: 2, 101: 1}
	groupKernel(f, alive, members)
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	delete(alive, 100)
	members[100] = 1
	f.exited(100, 3)
	l.reap()
	if _, ok := l.linger.groups[100]; !ok {
		t.Fatalf("group 100 not tracked: %v", l.linger.groups)
	}
	// The group empties and pid 100 goes to an unrelated process leading
	// a group of its own.
	alive[100] = true
	f.kills = nil
	f.now += 10e9
	l.lingerDue()
	for _, k := range f.kills {
		if k.pid == -100 {
			t.Fatalf("signalled group 100 though pid 100 is another process: %v", f.kills)
		}
	}
}

// A group the core stopped already gets no second stop signal, only its
// SIGKILL, --stop-timeout after the first.
func TestStoppedWorkersGroupNotSignalledTwice(t *testing.T) {
	f := newFakeOS()
	alive := map[int]bool{100: true, 101: true}
	members := map[int]int{100: 2, 101: 1}
	groupKernel(f, alive, members)
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	stopAt := f.now
	l.perform(fsm.Kill{Pids: []int{100}, Signal: fsm.SIGTERM})
	f.now += 1e9
	delete(alive, 100)
	members[100] = 1
	f.kills = nil
	f.exited(100, 0)
	l.reap()
	for _, k := range f.kills {
		if k.pid == -100 {
			t.Fatalf("group signalled again at the worker's exit: %v", f.kills)
		}
	}
	if at := l.linger.groups[100]; at != stopAt+10e9 {
		t.Fatalf("SIGKILL due at %d, want %d (the stop signal + --stop-timeout)", at, stopAt+10e9)
	}
}
