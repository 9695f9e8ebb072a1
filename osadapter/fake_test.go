package osadapter

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// fakeOS is a kernel that records what the loop asks of it.
type fakeOS struct {
	shell   string // OS.Shell: "" uses the self-exec trampoline
	cwd     string // the working directory: "" leaves Getwd and Chdir nil
	pid     int
	now     int64
	nextPid int
	env     []string

	calls  []string // every call, in order, for sequence assertions
	kills  []fakeKill
	spawns []fakeSpawn
	waits  []fakeWait   // results of the next Wait4 calls
	live   map[int]bool // spawned and not yet reaped: wait4 says 0, not ECHILD
	execs  []fakeExec
	// execErr is what Exec returns; nil means "the image was replaced".
	execErr error
	// checks are the takeover checks run; checkErr is their verdict.
	checks   []fakeExec
	checkErr error
	running  bool // the start path is the running image
	// killErr returns the error of kill(pid, sig); nil when unset.
	killErr func(pid int) error
	// onSpawn and onKill, when set, play the rest of the world after a
	// fork or a kill (they run on the loop's goroutine).
	onSpawn func(pid int)
	onKill  func(pid int, sig syscall.Signal)

	mask unix.Sigset_t
	// The terminal: tty says stdin is the controlling terminal, fg is its
	// foreground process group, pgrp the master's, orphan whether that
	// group is orphaned; termOS sets them in the OS.
	tty    bool
	fg     int
	pgrp   int
	orphan bool
	// inodes are what fstat reports as each fd's inode; an fd missing
	// here is closed (EBADF). fakeListeners fills it.
	inodes map[int]uint64
}

type fakeKill struct {
	pid int
	sig syscall.Signal
}

type fakeSpawn struct {
	argv0 string
	argv  []string
	attr  *syscall.ProcAttr
	pid   int
}

type fakeWait struct {
	pid int
	ws  syscall.WaitStatus
}

type fakeExec struct {
	path      string
	argv, env []string
}

func newFakeOS() *fakeOS {
	return &fakeOS{pid: 4242, now: 1_000_000_000, nextPid: 100, live: map[int]bool{}, env: []string{"PATH=/bin", "HOME=/root"}}
}

func (f *fakeOS) record(format string, a ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

func (f *fakeOS) os() *OS {
	sys := f.kernel()
	if f.pgrp != 0 {
		sys.Getpgrp = func() int { return f.pgrp }
		sys.Tcgetpgrp = func() (int, error) {
			if !f.tty {
				return 0, &errNoTerminal{"stdin is not a terminal"}
			}
			return f.fg, nil
		}
		sys.Tcsetpgrp = func(pgrp int) error { f.fg = pgrp; f.record("tcsetpgrp %d", pgrp); return nil }
		sys.Orphaned = func() (bool, error) { return f.orphan, nil }
	}
	if f.cwd != "" {
		sys.Getwd = func() (string, error) { return f.cwd, nil }
		sys.Chdir = func(dir string) error { f.cwd = dir; f.record("chdir %s", dir); return nil }
	}
	return sys
}

func (f *fakeOS) kernel() *OS {
	return &OS{
		Getpid:  func() int { return f.pid },
		Gettid:  func() int { return f.pid },
		Now:     func() int64 { return f.now },
		Environ: func() []string { return append([]string(nil), f.env...) },
		ForkExec: func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
			pid := f.nextPid
			f.nextPid++
			f.spawns = append(f.spawns, fakeSpawn{argv0, argv, attr, pid})
			f.live[pid] = true
			f.record("forkexec %s", argv0)
			if attr.Sys.Foreground {
				f.fg = pid
				f.record("foreground %d", pid)
			}
			if f.onSpawn != nil {
				f.onSpawn(pid)
			}
			return pid, nil
		},
		Kill: func(pid int, sig syscall.Signal) error {
			f.kills = append(f.kills, fakeKill{pid, sig})
			f.record("kill %d %d", pid, sig)
			if f.onKill != nil {
				f.onKill(pid, sig)
			}
			if f.killErr != nil {
				return f.killErr(pid)
			}
			return nil
		},
		Wait4: func(pid int, ws *syscall.WaitStatus, options int) (int, error) {
			if pid != -1 || options&syscall.WNOHANG == 0 {
				return 0, fmt.Errorf("fake: wait4(%d, %#x): only wait4(-1, WNOHANG) is expected", pid, options)
			}
			if len(f.waits) == 0 {
				if len(f.live) > 0 {
					return 0, nil
				}
				return 0, syscall.ECHILD
			}
			w := f.waits[0]
			f.waits = f.waits[1:]
			if !w.ws.Stopped() {
				delete(f.live, w.pid)
			}
			*ws = w.ws
			return w.pid, nil
		},
		Exec: func(path string, argv, env []string, held *unix.Sigset_t) error {
			f.execs = append(f.execs, fakeExec{path, argv, env})
			f.record("exec %s held %x", path, held.Val[0])
			return f.execErr
		},
		UnblockAll: func(set *unix.Sigset_t) error {
			f.record("unblock all %x", set.Val[0])
			return nil
		},
		CheckTakeover: func(path string, argv, env []string) error {
			f.checks = append(f.checks, fakeExec{path, argv, env})
			f.record("check %s", path)
			return f.checkErr
		},
		Running: func(path string) bool { return f.running },
		SigMask: func(how int, set, old *unix.Sigset_t) error {
			if old != nil {
				*old = f.mask
			}
			if set == nil {
				return nil
			}
			switch how {
			case unix.SIG_BLOCK:
				for i := range f.mask.Val {
					f.mask.Val[i] |= set.Val[i]
				}
				f.record("sigmask block %v", set.Val[0])
			case unix.SIG_UNBLOCK:
				for i := range f.mask.Val {
					f.mask.Val[i] &^= set.Val[i]
				}
				f.record("sigmask unblock %v", set.Val[0])
			case unix.SIG_SETMASK:
				f.mask = *set
				f.record("sigmask set %v", set.Val[0])
			}
			return nil
		},
		Ignore:     func(sig syscall.Signal) { f.record("ignore %d", sig) },
		Catch:      func(sig syscall.Signal) { f.record("catch %d", sig) },
		SetCloexec: func(fd int, on bool) error { f.record("cloexec %d %v", fd, on); return nil },
		Fstat: func(fd int, st *unix.Stat_t) error {
			ino, ok := f.inodes[fd]
			if !ok {
				return syscall.EBADF
			}
			*st = unix.Stat_t{Dev: 9, Ino: ino}
			return nil
		},
		Subreaper: func() error { f.record("subreaper"); return nil },
		SelfExe:   "/proc/self/exe",
		Shell:     f.shell,
	}
}

// exited queues a wait4 result: pid exited with code.
func (f *fakeOS) exited(pid, code int) {
	f.waits = append(f.waits, fakeWait{pid, syscall.WaitStatus(code << 8)})
}

// killed queues a wait4 result: pid killed by sig.
func (f *fakeOS) killed(pid int, sig syscall.Signal) {
	f.waits = append(f.waits, fakeWait{pid, syscall.WaitStatus(sig)})
}

// fakeListeners registers listeners with l as if bound at start: fds
// (7, 9...) named by names, each a socket of its own on f.
func fakeListeners(t *testing.T, f *fakeOS, l *loop, names []string, fds ...int) {
	t.Helper()
	if f.inodes == nil {
		f.inodes = make(map[int]uint64)
	}
	for i, fd := range fds {
		f.inodes[fd] = uint64(5000 + fd)
		o := &ownedFd{key: "listener " + itoa(i) + " " + names[i], name: names[i], fd: fd}
		if err := l.fds.record(o); err != nil {
			t.Fatal(err)
		}
		l.fds.listeners = append(l.fds.listeners, o)
	}
}

// testLog collects a loop's log, written by the loop's queue on a
// goroutine of its own.
type testLog struct {
	out *heldWriter // the loop's writer, or nil
	e2etest.SyncBuffer
}

// String is the log so far, once the loop's writer has written what it
// holds and queues.
func (l *testLog) String() string {
	if l.out != nil {
		l.out.sync(logWait{stall: time.Minute, limit: time.Minute})
	}
	return l.SyncBuffer.String()
}

// fakeLoop builds a loop on f; the returned buffer collects its logs.
func fakeLoop(t *testing.T, f *fakeOS, cfg Config, sigs chan os.Signal) (*loop, *testLog) {
	t.Helper()
	var logs testLog
	if cfg.Command == nil {
		cfg.Command = []string{"/bin/worker", "-x"}
	}
	if cfg.Machine.Workers == 0 {
		cfg.Machine.Workers = 2
	}
	if cfg.Machine.ReadyTimeout == 0 {
		cfg.Machine.ReadyTimeout = 30e9
	}
	if cfg.Machine.StopTimeout == 0 {
		cfg.Machine.StopTimeout = 10e9
	}
	if cfg.Machine.StopSignal == 0 {
		cfg.Machine.StopSignal = 15
	}
	if cfg.Machine.Path == "" {
		cfg.Machine.Path = "/usr/bin/mworker"
	}
	if cfg.Machine.Argv == nil {
		cfg.Machine.Argv = []string{"mworker", "run", "--", "/bin/worker", "-x"}
	}
	cfg.LogLevel = -4
	l, err := newLoop(cfg, f.os(), sigs, &logs)
	if err != nil {
		t.Fatalf("newLoop: %v", err)
	}
	logs.out = l.out
	return l, &logs
}
