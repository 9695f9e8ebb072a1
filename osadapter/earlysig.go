package osadapter

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The start window. signal.Notify costs the runtime a round trip to its
// signal thread per signal, a few milliseconds for all of them; until a
// signal is subscribed, the runtime's handler kills the master on SIGHUP,
// dumps its stacks on SIGQUIT or one of the synchronous signals, and drops
// most others (SIGUSR1, SIGALRM, the real-time ones...). So a master first
// catches every signal the runtime would handle that way with a raw
// handler of this package's own (rawsig_*.s), in a few microseconds, which
// writes each one to the pipe rawSignals use; subscribeAll then subscribes
// as before and endEarly gives each signal back to the runtime's handler.
// Nothing sent with kill(2) in between is lost: it is read from the pipe
// or from signal.Notify's channel. A signal the kernel raises (a real fault,
// si_code > 0) is passed on at once to the handler that was there before
// (rawEarlyFwd), so a real fault of the master still crashes it as the
// runtime crashes it.

// Defined in rawsig_*.s: the early handler.
var rawEarlyHandlerPC uintptr

// rawEarlyFwd[n] is the handler signal n had before the early one, for a
// signal the kernel raises (0: treat it as one sent with kill(2)).
var rawEarlyFwd [65]uintptr

// earlyOld[n] is the action signal n had before catchEarly.
var earlyOld [65]sigaction

// earlyCaught are the signals catchEarly installed the early handler for.
var earlyCaught []syscall.Signal

// catchEarly starts the raw pipe to ch and installs the early handler for
// every catchable signal but SIGURG (the runtime's preemption) and 33 (the
// runtime's per-thread system calls). It does nothing where there is no
// raw handler.
func catchEarly(ch chan<- os.Signal) {
	if rawSigHandlerPC == 0 || rawEarlyHandlerPC == 0 {
		return
	}
	if err := startRawPipe(ch); err != nil {
		rawSigErr = err
		return
	}
	for n := 1; n <= 64; n++ {
		s := syscall.Signal(n)
		switch s {
		case syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGURG, 33:
			continue
		}
		var old sigaction
		if unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); old.handler > 1 {
			rawEarlyFwd[n] = old.handler
		}
		if setRawAction(s, rawEarlyHandlerPC, &earlyOld[n]) == nil {
			earlyCaught = append(earlyCaught, s)
		}
	}
}

// endEarly, once every signal is subscribed, gives the signals still on the
// early handler back to the runtime's handler they had before. A signal
// the runtime did not handle then (the stop signals, SIGCONT, an inherited
// SIG_IGN of SIGHUP or SIGINT) was given the runtime's handler by
// signal.Notify already; rawSignals have their own.
func endEarly() {
	for _, s := range earlyCaught {
		var cur sigaction
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), 0, uintptr(unsafe.Pointer(&cur)), 8, 0, 0)
		if cur.handler != rawEarlyHandlerPC {
			continue
		}
		if old := earlyOld[s]; old.handler > 1 {
			unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
		} else {
			setRawAction(s, rawSigHandlerPC, nil)
		}
	}
	earlyCaught = nil
}
