package osadapter

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// The master records its directory and makes a relative --pidfile absolute
// in it, leaves it for "/", starts workers in it, and goes back to it for
// the takeover check and the execve only; the next image gets it.
func TestMasterLeavesItsDirectoryWorkersStartInIt(t *testing.T) {
	f := newFakeOS()
	dir := t.TempDir()
	f.cwd = dir
	l, _ := fakeLoop(t, f, Config{PidFile: "m.pid", CheckTakeover: true}, nil)
	if want := filepath.Join(dir, "m.pid"); l.pidFile != want {
		t.Errorf("pid file %q, want %q", l.pidFile, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "m.pid")); err != nil {
		t.Error(err)
	}
	l.leaveDir()
	l.start()
	if f.cwd != "/" {
		t.Errorf("master's directory %q after start, want /", f.cwd)
	}
	for _, s := range f.spawns {
		if s.attr.Dir != dir {
			t.Errorf("worker started in %q, want %q", s.attr.Dir, dir)
		}
	}
	f.calls = nil
	st := reload(t, f, l)
	if st.Dir != dir {
		t.Errorf("handover names directory %q, want %q", st.Dir, dir)
	}
	ci, ki := slices.Index(f.calls, "chdir "+dir), slices.Index(f.calls, "check /usr/bin/mworker")
	ei := slices.IndexFunc(f.calls, func(c string) bool { return strings.HasPrefix(c, "exec /usr/bin/mworker") })
	if ci < 0 || ki < ci || ei < ci {
		t.Errorf("want chdir %s before the check and the exec: %q", dir, f.calls)
	}

}

// An exec that fails leaves the directory again.
func TestFailedExecLeavesTheDirectoryAgain(t *testing.T) {
	f := newFakeOS()
	dir := t.TempDir()
	f.cwd = dir
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.leaveDir()
	l.start()
	f.execErr = syscall.ENOEXEC
	f.calls = nil
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 1 || f.cwd != "/" || slices.Index(f.calls, "chdir "+dir) < 0 {
		t.Errorf("after a failed exec: %d execs, directory %q, want 1 exec made from %s and / again (calls %q)", len(f.execs), f.cwd, dir, f.calls)
	}
}

// The thread that forks a worker takes the mask of mworker's start for
// the fork only.
func TestSpawnForksWithTheStartMask(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.mask = sigset(syscall.SIGILL, syscall.SIGTERM)
	thread := sigset(syscall.SIGUSR1)
	f.mask = thread
	var atFork unix.Sigset_t
	f.onSpawn = func(int) { atFork = f.mask }
	l.start()
	if atFork != l.mask {
		t.Errorf("mask at the fork %x, want the start mask %x", atFork.Val[0], l.mask.Val[0])
	}
	if f.mask != thread {
		t.Errorf("thread's mask after the spawns %x, want %x back", f.mask.Val[0], thread.Val[0])
	}
}
