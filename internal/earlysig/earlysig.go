// Package earlysig catches every signal at the start of a program, before
// the packages it imports initialize, and writes each one's number to a
// pipe until the program takes the signals over.
//
// The Go runtime installs its signal handlers before any package
// initializes; from then until a program subscribes with signal.Notify,
// the runtime's handler kills it on SIGHUP and SIGTERM, dumps its stacks
// on SIGQUIT, SIGILL or SIGSYS, and drops most other signals (SIGUSR1,
// SIGALRM, the real-time ones...). The packages a program like mworker
// imports (crypto, net, protobuf through the Prometheus client) take tens
// of milliseconds to initialize. This package imports nothing but unsafe,
// so the Go toolchain, which initializes among the packages whose imports
// are ready the first in import-path order, initializes it before every
// package that imports more than the runtime's own leaves: its init makes
// a non-blocking close-on-exec pipe (ReadFd, WriteFd) and installs, in a
// few microseconds, a handler of its own (HandlerPC, in
// earlysig_linux_*.s) for every signal but SIGKILL, SIGSTOP, SIGURG (the
// runtime's preemption) and 33 (the runtime's per-thread system calls).
// The handler writes the signal's number, one byte, to WriteFd; a full
// pipe drops it. A signal the kernel raises itself (a real fault, si_code
// above 0) goes on at once to the handler that was there before (the
// runtime's), so a real fault still crashes the program as it should.
//
// The program then adopts the pipe and, once its own subscriptions are in
// place, gives each signal back its previous action (Old) with Restore; a
// program that has no use for the catch calls Release at once. A handler
// of the program's own is reset to SIG_DFL by execve, so no child inherits
// it; SIG_IGN would be kept, which is why Release restores it.
//
// It does nothing (Caught is 0) where there is no handler: other
// architectures than amd64 and arm64, other systems than Linux.
package earlysig

import "unsafe"

// Action is struct sigaction as the rt_sigaction system call takes it on
// amd64 and arm64.
type Action struct {
	Handler  uintptr
	Flags    uint64
	Restorer uintptr
	Mask     uint64
}

var (
	// HandlerPC is the early handler's address (0: none here).
	HandlerPC uintptr
	// ReadFd and WriteFd are the pipe's ends (-1: no pipe).
	ReadFd, WriteFd int32 = -1, -1
	// Caught has bit n-1 set for each signal n the early handler was
	// installed for.
	Caught uint64
	// Old[n] is the action signal n had before the early handler.
	Old [65]Action
	// Fwd[n] is the handler a signal n raised by the kernel goes to (0:
	// SIG_DFL or SIG_IGN before: treated as one sent with kill(2)).
	Fwd [65]uintptr
	// InitAt and DoneAt are CLOCK_MONOTONIC (ns) when this package's init
	// began and when every signal was caught.
	InitAt, DoneAt int64
)

// sigBytes[n] is n: the byte the handler writes for signal n.
var sigBytes [65]byte

// IsCaught says whether the early handler was installed for signal n.
func IsCaught(n int) bool { return n >= 1 && n <= 64 && Caught&(1<<(n-1)) != 0 }

// Current returns the action signal n has now, and whether it could be
// read.
func Current(n int) (Action, bool) {
	var cur Action
	return cur, sigaction(n, nil, &cur)
}

// Restore gives signal n back its action from before the early handler,
// if the early handler is still its own; it says whether it did.
func Restore(n int) bool {
	if !IsCaught(n) {
		return false
	}
	Caught &^= 1 << (n - 1)
	if cur, ok := Current(n); !ok || cur.Handler != HandlerPC {
		return false
	}
	old := Old[n]
	return sigaction(n, &old, nil)
}

// Release restores every signal the early handler still holds and closes
// the pipe: for a program that does not take the signals over.
func Release() {
	for n := 1; n <= 64; n++ {
		Restore(n)
	}
	if ReadFd >= 0 {
		closeFd(ReadFd)
		closeFd(WriteFd)
		ReadFd, WriteFd = -1, -1
	}
}

// Monotonic returns CLOCK_MONOTONIC in nanoseconds, by a raw system call
// (0 where there is none).
func Monotonic() int64 {
	var ts [2]int64
	if !clockMonotonic(&ts) {
		return 0
	}
	return ts[0]*1e9 + ts[1]
}

func sigaction(n int, act, old *Action) bool {
	return rawSigaction(uintptr(n), unsafe.Pointer(act), unsafe.Pointer(old)) == 0
}
