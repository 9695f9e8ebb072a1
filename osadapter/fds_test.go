package osadapter

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/listen"
)

// collectGarbage runs the collector until the finalizers of what was
// unreachable before the call have run: each round waits for the
// finalizer of an object dropped in that round, and finalizers run one
// after another on one goroutine.
func collectGarbage(t *testing.T, rounds int) {
	t.Helper()
	for range rounds {
		done := make(chan struct{})
		sentinel := new([64]byte)
		runtime.SetFinalizer(sentinel, func(*[64]byte) { close(done) })
		sentinel = nil
		runtime.GC()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the collector ran no finalizer within 10 s")
		}
	}
	runtime.GC() // and whatever the last finalizers queued
}

// The loop keeps the listeners it was given open and unchanged however
// often the collector runs, with nothing but the loop referring to them.
// Issue 12: the loop kept only their numbers, the *os.Files were closed by
// their finalizers, and the numbers were reused by the next sockets.
func TestListenersSurviveGC(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.fds.fstat = unix.Fstat
	specs, err := listen.ParseSpecs([]string{"web=127.0.0.1:0", "unix://" + filepath.Join(t.TempDir(), "app.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := listen.Bind(specs)
	if err != nil {
		t.Fatal(err)
	}
	fds := make([]int, len(ls))
	inodes := make([]uint64, len(ls))
	for i, ln := range ls {
		var st unix.Stat_t
		fds[i] = int(ln.File.Fd())
		if err := unix.Fstat(fds[i], &st); err != nil {
			t.Fatal(err)
		}
		inodes[i] = st.Ino
	}
	if err := l.useListeners(ls); err != nil {
		t.Fatal(err)
	}
	ls = nil
	t.Cleanup(func() { l.fds.closeAll() })

	collectGarbage(t, 3)
	// What a reused number would be taken by.
	var others []int
	for range len(fds) {
		p := make([]int, 2)
		if err := unix.Pipe2(p, unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		others = append(others, p...)
	}
	defer func() {
		for _, fd := range others {
			unix.Close(fd)
		}
	}()

	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Errorf("listener %d: fd %d was closed under the loop: %v", i, fd, err)
		} else if st.Ino != inodes[i] {
			t.Errorf("listener %d: fd %d is inode %d, was the socket %d", i, fd, st.Ino, inodes[i])
		}
	}
	got, _, err := l.fds.workerFds()
	if err != nil || len(got) != len(fds) || got[0] != fds[0] || got[1] != fds[1] {
		t.Errorf("worker fds %v, %v; want %v", got, err, fds)
	}
}

// A listener whose fd no longer names the socket registered (closed, or
// its number reused) is neither passed to a worker nor handed to the next
// image: the spawn fails with the listener's name and the reason, and so
// does the reload.
func TestReplacedListenerIsNeverPassedOn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(f *fakeOS)
		want   string
	}{
		{"reused", func(f *fakeOS) { f.inodes[9] = 77 }, "now names device 9 inode 77, not device 9 inode 5009"},
		{"closed", func(f *fakeOS) { delete(f.inodes, 9) }, "it was closed under the master (fstat: bad file descriptor)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeOS()
			l, logs := fakeLoop(t, f, Config{}, nil)
			fakeListeners(t, f, l, []string{"web", "admin"}, 7, 9)
			l.start()
			if len(f.spawns) != 2 {
				t.Fatalf("%d workers spawned at start, want 2", len(f.spawns))
			}
			tc.change(f)

			ev := l.perform(fsm.Spawn{Generation: 1, Slot: 0})
			sf, ok := ev.(fsm.SpawnFailed)
			if !ok {
				t.Fatalf("spawn with a replaced listener gave %v, want SpawnFailed", ev)
			}
			for _, want := range []string{"listener 1 admin at fd 9", tc.want} {
				if !strings.Contains(sf.Err, want) {
					t.Errorf("spawn failed with %q; want it to say %q", sf.Err, want)
				}
			}
			if len(f.spawns) != 2 {
				t.Errorf("a worker was forked with a replaced listener: %q", f.calls)
			}
			if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "listener=admin") {
				t.Errorf("the refusal is not logged as an error naming the listener:\n%s", logs)
			}

			f.calls = nil
			l.step(fsm.SignalReceived{Signal: fsm.SIGHUP})
			if len(f.execs) != 0 {
				t.Fatalf("re-exec'd with a replaced listener: %q", f.calls)
			}
			for _, c := range f.calls {
				if strings.HasPrefix(c, "cloexec") {
					t.Errorf("a listener was kept open across an exec that did not happen: %q", f.calls)
				}
			}
			if l.m.State() != "running" || l.done() {
				t.Errorf("state %s done=%v after the refused re-exec, want running", l.m.State(), l.done())
			}
			if !strings.Contains(logs.String(), "refusing to hand a listener") {
				t.Errorf("the refused re-exec is not logged:\n%s", logs)
			}
		})
	}
}

// The registry closes what it owns at the master's exit, and only then.
func TestListenersClosedAtExit(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{Machine: fsm.Config{Workers: 1}}, nil)
	l.fds.fstat = unix.Fstat
	ls, err := listen.Bind([]listen.Spec{{Name: "web", Network: listen.TCP, Address: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	fd := int(ls[0].File.Fd())
	if err := l.useListeners(ls); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fd %d closed before the exit: %v", fd, err)
	}
	l.closeTransports()
	if err := unix.Fstat(fd, &st); !errors.Is(err, syscall.EBADF) {
		t.Errorf("fd %d after the exit: fstat %v, want EBADF", fd, err)
	}
}

// BenchmarkListenerCheck is the cost a spawn pays to check that its
// listeners are still the sockets they were: one fstat each.
func BenchmarkListenerCheck(b *testing.B) {
	l := &loop{sys: realOS()}
	l.fds.fstat = l.sys.Fstat
	ls, err := listen.Bind([]listen.Spec{{Name: "web", Network: listen.TCP, Address: "127.0.0.1:0"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := l.fds.addListener(ls[0].Name, ls[0].File); err != nil {
		b.Fatal(err)
	}
	defer l.fds.closeAll()
	for b.Loop() {
		if _, _, err := l.fds.workerFds(); err != nil {
			b.Fatal(err)
		}
	}
}
