package osadapter

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// OS is the seam between the event loop and the kernel: every system call
// the loop makes goes through one of these functions, so that tests can run
// the loop against a fake kernel and assert what it would have done.
//
// The loop calls them all from one goroutine. ForkExec, Exec and SigMask
// must run on the thread the master was started on (see init.go): the
// parent-death signal of a worker fires when the thread that forked it ends,
// and a signal mask belongs to one thread.
type OS struct {
	Getpid func() int
	Gettid func() int
	// Now reads CLOCK_MONOTONIC in nanoseconds. The clock is system-wide, so
	// a deadline taken from it means the same thing after a re-exec.
	Now func() int64
	// Environ is the master's environment.
	Environ func() []string

	ForkExec func(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, err error)
	Kill     func(pid int, sig syscall.Signal) error
	Wait4    func(pid int, ws *syscall.WaitStatus, options int) (int, error)
	// Exec replaces the process image with held blocked in every thread
	// from before its last look at what is pending until execve
	// (holdExec); it does not exec when a stop signal is pending then
	// (*stopPendingError), and leaves held blocked in every thread
	// whenever it returns. It returns only on failure (a fake
	// returns nil to say "the image was replaced").
	Exec func(path string, argv, env []string, held *unix.Sigset_t) error
	// CheckTakeover runs the binary at path as a takeover check (check.go)
	// with argv and env and returns why it refused, or nil. Nil skips the
	// check.
	CheckTakeover func(path string, argv, env []string) error
	// Running says whether path is the very file this image runs from
	// (same device and inode): then it needs no takeover check.
	Running func(path string) bool

	// SigMask is pthread_sigmask on the calling thread.
	SigMask func(how int, set, old *unix.Sigset_t) error
	// StartSignals returns the signal mask and the SIG_IGN signals the
	// process was started with, which the Go runtime changed before any
	// package initialized (startsig.go); nil where they cannot be known.
	StartSignals func() (mask uint64, ignored []syscall.Signal, err error)
	// UnblockAll unblocks set in every thread of the process, after an
	// Exec that did not replace the image (holdexec.go).
	UnblockAll func(set *unix.Sigset_t) error
	// CatchForExec makes the stop and reload signals that arrive from now
	// on to execve go to a pipe the next image reads (rawsig.go); nil where
	// there is no such handler.
	CatchForExec func() (*execCatch, error)
	// Ignore sets sig to SIG_IGN; Catch hands it back to the loop's channel.
	Ignore func(sig syscall.Signal)
	Catch  func(sig syscall.Signal)
	// SetCloexec sets or clears FD_CLOEXEC on fd.
	SetCloexec func(fd int, on bool) error
	// Fstat is fstat(2): the registry's check that a listener's fd still
	// names the socket it did (fds.go).
	Fstat func(fd int, st *unix.Stat_t) error
	// Subreaper makes the master the reaper of its descendants' orphans.
	Subreaper func() error
	// Getwd and Chdir read and change the master's working directory
	// (workdir.go); nil leaves it alone.
	Getwd func() (string, error)
	Chdir func(dir string) error

	// Getpgrp is the master's process group. Tcgetpgrp and Tcsetpgrp
	// read and set the foreground process group of the terminal on stdin
	// (Tcsetpgrp with SIGTTOU blocked in the calling thread); Orphaned
	// says whether the master's process group is orphaned (terminal.go).
	// Nil: no terminal mode, and the master never stops itself.
	Getpgrp   func() int
	Tcgetpgrp func() (int, error)
	Tcsetpgrp func(pgrp int) error
	Orphaned  func() (bool, error)

	// SelfExe is a path that executes the running image: the trampoline
	// (trampoline.go) runs from it.
	SelfExe string
	// Shell is a POSIX shell for the light trampoline, or "" where there is
	// none (a distroless image): then SelfExe does the job.
	Shell string
}

// realOS is the kernel.
func realOS() *OS {
	return &OS{
		Getpid:  os.Getpid,
		Gettid:  unix.Gettid,
		Now:     monotonicNow,
		Environ: os.Environ,
		ForkExec: func(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
			return syscall.ForkExec(argv0, argv, attr)
		},
		Kill: syscall.Kill,
		Wait4: func(pid int, ws *syscall.WaitStatus, options int) (int, error) {
			return syscall.Wait4(pid, ws, options, nil)
		},
		Exec: holdExec,
		CheckTakeover: func(path string, argv, env []string) error {
			return runCheck(path, argv, env, checkTimeout)
		},
		Running:      isRunningImage,
		SigMask:      unix.PthreadSigmask,
		StartSignals: startSignals,
		UnblockAll:   unblockAllThreads,
		CatchForExec: catchForExec,
		Ignore:       func(sig syscall.Signal) { signal.Ignore(sig) },
		Catch:        func(sig syscall.Signal) { signal.Notify(subscribed(), sig) },
		SetCloexec: func(fd int, on bool) error {
			flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			if err != nil {
				return err
			}
			if on {
				flags |= unix.FD_CLOEXEC
			} else {
				flags &^= unix.FD_CLOEXEC
			}
			_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags)
			return err
		},
		Fstat:     unix.Fstat,
		Subreaper: func() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
		Getwd:     os.Getwd,
		Chdir:     os.Chdir,
		Getpgrp:   unix.Getpgrp,
		Tcgetpgrp: tcgetpgrp,
		Tcsetpgrp: tcsetpgrp,
		Orphaned:  orphaned,
		SelfExe:   "/proc/self/exe",
		Shell:     findShell(),
	}
}

// kernelSigsetSize is the kernel's sigset_t, 64 signals: what the rt_*
// system calls take as their size argument (x/sys's Sigset_t is the C
// library's, 1024 bits; the kernel refuses that size with EINVAL).
const kernelSigsetSize = 8

func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC cannot fail on Linux; a zero would only make
		// timers fire early, never late.
		return 0
	}
	return ts.Nano()
}

// sigset builds a signal set.
func sigset(sigs ...syscall.Signal) unix.Sigset_t {
	var s unix.Sigset_t
	for _, sig := range sigs {
		n := uint(sig) - 1
		s.Val[n/64] |= 1 << (n % 64)
	}
	return s
}

// sigsetHas reports whether sig is in s.
func sigsetHas(s unix.Sigset_t, sig syscall.Signal) bool {
	n := uint(sig) - 1
	return s.Val[n/64]&(1<<(n%64)) != 0
}

// findShell returns /bin/sh when it can be executed, or "".
func findShell() string {
	if unix.Access("/bin/sh", unix.X_OK) == nil {
		return "/bin/sh"
	}
	return ""
}
