package osadapter

import (
	"errors"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSignals are the signals that os/signal cannot deliver, caught instead
// by a handler of this package's own (rawsig_*.s):
//
//   - SIGPROF: the runtime's handler takes every SIGPROF for its CPU
//     profiler and drops it when no profile runs; signal.Notify does
//     nothing for it. The master never profiles itself.
//   - 32 and 34: the runtime leaves them at SIG_DFL for the C library's
//     threads (glibc's thread cancellation, musl's synchronous calls) and
//     signal.Notify does nothing for them, so one sent with kill(2) would
//     end the master.
//
// The handler only writes the signal's number, one byte, to a non-blocking
// pipe; a goroutine reads it and queues the signal on the channel that
// signal.Notify fills, so that the loop handles these three as any other.
// A handler of the program's own is reset to SIG_DFL by execve, so no
// worker inherits it. Signal 33 stays the runtime's (see
// fsm.CatchableSignals).
var rawSignals = []syscall.Signal{syscall.SIGPROF, 32, 34}

// Defined in rawsig_*.s: the addresses of the handler and, for the
// sigaction's SA_RESTORER, of the code that returns from it.
var rawSigHandlerPC, rawSigReturnPC uintptr

// rawSigFd is the write end of the pipe, which the handler reads.
var rawSigFd int32

// rawSigBytes[n] is n: the byte the handler writes for signal n.
var rawSigBytes [65]byte

// sigaction is struct sigaction as the rt_sigaction system call takes it
// on amd64 and arm64.
type sigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	saSiginfo  = 0x4
	saRestorer = 0x04000000
	saOnstack  = 0x08000000
	saRestart  = 0x10000000
)

// catchRaw installs the handler for rawSignals and forwards what it catches
// to ch. It returns an error, and installs nothing, if the pipe cannot be
// made.
func catchRaw(ch chan<- os.Signal) error {
	if rawSigHandlerPC == 0 {
		// No rawsig_GOARCH.s: installing address 0 would set SIG_DFL,
		// which ends the master on these signals.
		return errors.New("no raw signal handler for " + runtime.GOARCH)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	for i := range rawSigBytes {
		rawSigBytes[i] = byte(i)
	}
	rawSigFd = int32(p[1])
	r := os.NewFile(uintptr(p[0]), "raw signals")
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := r.Read(buf)
			if err != nil {
				return
			}
			for _, b := range buf[:n] {
				// As the runtime does for signal.Notify: a full
				// channel drops the signal rather than block.
				select {
				case ch <- syscall.Signal(b):
				default:
				}
			}
		}
	}()
	sa := sigaction{
		handler: rawSigHandlerPC,
		// On the signal stack the runtime gives every thread: the
		// goroutine stack the signal interrupts may be too small for
		// the kernel's signal frame.
		flags:    saSiginfo | saOnstack | saRestart | saRestorer,
		restorer: rawSigReturnPC,
		mask:     ^uint64(0), // nothing nests in the handler
	}
	for _, s := range rawSignals {
		_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
		if errno != 0 {
			return errno
		}
	}
	return nil
}
