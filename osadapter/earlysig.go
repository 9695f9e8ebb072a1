package osadapter

import (
	"os"
	"syscall"

	"github.com/mworker/mworker/internal/earlysig"
)

// The start window. Until a signal is subscribed with signal.Notify, the
// runtime's handler kills the master on SIGHUP, dumps its stacks on SIGQUIT
// or one of the synchronous signals, and drops most others (SIGUSR1,
// SIGALRM, the real-time ones...); and signal.Notify costs the runtime a
// round trip to its signal thread per signal, a few milliseconds for all
// of them. So the package internal/earlysig, which imports nothing and is
// initialized before the packages that take time (crypto, net, protobuf),
// catches every signal the runtime would handle that way with a raw
// handler of its own that writes each one to a pipe (docs/signals.md, "The
// master's first milliseconds"). A master adopts that pipe as the one
// rawSignals use (catchEarly), subscribeAll then subscribes as before, and
// endEarly gives each signal back to the runtime's handler. Nothing sent
// with kill(2) in between is lost: it is read from the pipe or from
// signal.Notify's channel. A signal the kernel raises (a real fault,
// si_code > 0) is passed on at once to the handler that was there before,
// so a real fault of the master still crashes it as the runtime crashes
// it. Any other image (a client command, a trampoline, a test) gives every
// signal back at once (releaseEarly).

// rawEarlyHandlerPC is the early handler (0: none here).
var rawEarlyHandlerPC = earlysig.HandlerPC

// earlyOld returns the action signal n had before the early handler.
func earlyOld(n int) sigaction {
	o := earlysig.Old[n]
	return sigaction{handler: o.Handler, flags: o.Flags, restorer: o.Restorer, mask: o.Mask}
}

// startIgnoredSig says whether signal s was at SIG_IGN when this image
// started: what the early handler replaced, or what is there now.
func startIgnoredSig(s syscall.Signal) bool {
	if earlysig.IsCaught(int(s)) {
		return earlysig.Old[s].Handler == 1
	}
	return isIgnored(s)
}

// releaseEarly gives back every signal the early handler holds, for an
// image that is not a master.
func releaseEarly() { earlysig.Release() }

// catchEarly adopts the early handler's pipe as the raw signals' pipe to
// ch. Without an early handler (no raw handler on this architecture) it
// does nothing.
func catchEarly(ch chan<- os.Signal) {
	if rawSigHandlerPC == 0 || earlysig.HandlerPC == 0 || earlysig.ReadFd < 0 {
		earlysig.Release()
		return
	}
	readRawPipe(int(earlysig.ReadFd), int(earlysig.WriteFd), ch)
}

// endEarly, once every signal is subscribed, gives the signals still on the
// early handler back to the runtime's handler they had before. A signal
// the runtime did not handle then (the stop signals, SIGCONT, an inherited
// SIG_IGN of SIGHUP or SIGINT) was given the runtime's handler by
// signal.Notify already; rawSignals have their own.
func endEarly() {
	for n := 1; n <= 64; n++ {
		if !earlysig.IsCaught(n) {
			continue
		}
		if earlysig.Old[n].Handler > 1 {
			earlysig.Restore(n)
			continue
		}
		if cur, ok := earlysig.Current(n); ok && cur.Handler == earlysig.HandlerPC {
			setRawAction(syscall.Signal(n), rawSigHandlerPC, nil)
		}
		earlysig.Caught &^= 1 << (n - 1)
	}
}

// earlyAt is CLOCK_MONOTONIC when the early handler was in place for every
// signal (0: never).
func earlyAt() int64 { return earlysig.DoneAt }
