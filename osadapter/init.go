package osadapter

import (
	"os"
	"os/signal"
	"runtime"
	"slices"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// signals receives every signal of fsm.CatchableSignals. For a master (the
// command line "mworker run ...", which a re-exec repeats) it is installed
// by the first variable initializer of the package, so that a master image
// started by a re-exec spends as little time as possible with SIGTERM and
// SIGINT at their default action (docs/signals.md measures that window).
// Any other program that links the package (the client commands, a demo
// worker, tests) subscribes only if it calls Run: subscribing costs the
// runtime a round trip per signal, about 7 ms for all of them, and would
// leave an ordinary command deaf to Ctrl-C.
// The buffer is large so that a burst never overflows it: the runtime drops
// what it cannot send, and identical pending signals already coalesce.
var signals = installSignals()

// isMasterCommand says whether this image is a master started from the
// command line: "mworker run ...", and not a takeover check (check.go).
func isMasterCommand() bool {
	return len(os.Args) > 1 && os.Args[1] == "run" && !isCheckCommand()
}

// subscribed returns the signal channel, subscribing now if init did not.
func subscribed() chan os.Signal {
	if signals == nil {
		signals = notifySignals(make(chan os.Signal, 1024))
	}
	return signals
}

var (
	// notifiedAt is CLOCK_MONOTONIC when the signals whose default action
	// would end or stop this image were caught; allNotifiedAt when every
	// signal was.
	notifiedAt, allNotifiedAt int64
	// initAt is CLOCK_MONOTONIC when this package's initialization began:
	// what comes before is the kernel's execve, the runtime and the
	// packages osadapter depends on.
	initAt int64
	// startIgnored are the signals this image found at SIG_IGN. The Go
	// runtime has replaced the dispositions of most signals before any
	// package initializes; it leaves an inherited SIG_IGN in place only for
	// SIGHUP and SIGINT, and does not touch the stop signals until
	// signal.Notify, so those are the ones that can be seen here; the
	// others are read from the runtime's own record (startsig.go).
	startIgnored []syscall.Signal
	// rawSigErr says why rawSignals could not be caught; Run logs it.
	rawSigErr error
)

func installSignals() chan os.Signal {
	initAt = monotonicNow()
	master := isMasterCommand()
	if _, trampoline := syscall.Getenv(envTrampoline); !master || trampoline {
		// The early catch (internal/earlysig) is a master's only.
		releaseEarly()
	}
	// A worker being started through the trampoline never gets further.
	runTrampoline()

	// Pin the main goroutine to the thread the process started on: Run
	// forks every worker and performs the re-exec from it, and that thread
	// is also the one that survives an execve, so no worker ever loses the
	// thread its parent-death signal is tied to.
	runtime.LockOSThread()

	for s := syscall.Signal(1); s <= 64; s++ {
		if startIgnoredSig(s) {
			startIgnored = append(startIgnored, s)
		}
	}
	if !master {
		return nil
	}
	ch := make(chan os.Signal, 1024)
	catchEarly(ch) // earlysig.go: nothing lost before signal.Notify
	return notifySignals(ch)
}

// notifySignals subscribes to every catchable signal. The subscriptions run
// on a goroutine of their own, which the caller waits for: the runtime
// enables each signal with a round trip to its signal-mask thread, and from
// the locked main thread each round trip costs more thread switches (7.6
// against 4.3 ms for 60 signals, measured in docs/performance.md). The
// window stays as protected: nothing returns before every signal is caught.
func notifySignals(ch chan os.Signal) chan os.Signal {
	done := make(chan chan os.Signal)
	go func() { done <- subscribeAll(ch) }()
	return <-done
}

func subscribeAll(ch chan os.Signal) chan os.Signal {
	// Each signal costs the runtime a round trip to its signal thread, so
	// the ones that would end or stop a freshly exec'd image go first.
	signal.Notify(ch, urgentSignals...)
	notifiedAt = monotonicNow()
	signal.Notify(ch, catchable()...)
	rawSigErr = catchRaw(ch)
	// Caught (not ignored, which workers would inherit): a write to a closed
	// stderr then fails with EPIPE instead of killing the master.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	endEarly()
	allNotifiedAt = monotonicNow()
	return ch
}

// urgentSignals are those a new image cannot survive before signal.Notify:
// SIGTERM and SIGINT kill it (the runtime unblocks them), SIGQUIT makes it
// dump goroutines and exit, the stop signals stop it (the runtime leaves
// them at SIG_DFL).
var urgentSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT,
	syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU}

// isIgnored reads sig's disposition from the kernel: os/signal's Ignored
// only knows about SIGHUP and SIGINT.
func isIgnored(sig syscall.Signal) bool {
	// struct sigaction as the kernel takes it; the handler comes first on
	// every architecture mworker supports.
	var old [4]uint64
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	return errno == 0 && old[0] == 1 // SIG_IGN
}

// catchable are the signals of fsm.CatchableSignals that signal.Notify can
// deliver: all but rawSignals.
func catchable() []os.Signal {
	var out []os.Signal
	for _, s := range fsm.CatchableSignals() {
		if !slices.Contains(rawSignals, syscall.Signal(s)) {
			out = append(out, syscall.Signal(s))
		}
	}
	return out
}
