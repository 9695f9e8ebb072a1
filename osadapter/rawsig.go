package osadapter

import (
	"errors"
	"os"
	"runtime"
	"strconv"
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
	if rawSigFd == 0 {
		if err := startRawPipe(ch); err != nil {
			return err
		}
	}
	for _, s := range rawSignals {
		if err := setRawAction(s, rawSigHandlerPC, nil); err != nil {
			return err
		}
	}
	return nil
}

// startRawPipe makes the pipe the raw handlers write to and the goroutine
// that queues what it reads on ch.
func startRawPipe(ch chan<- os.Signal) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	readRawPipe(p[0], p[1], ch)
	return nil
}

// readRawPipe points the raw handlers at the pipe w and starts the
// goroutine that queues what it reads from r on ch.
func readRawPipe(r, w int, ch chan<- os.Signal) {
	for i := range rawSigBytes {
		rawSigBytes[i] = byte(i)
	}
	rawSigFd = int32(w)
	f := os.NewFile(uintptr(r), "raw signals")
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := f.Read(buf)
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
}

// setRawAction installs handler, one of this package's raw handlers, for
// s, and stores the action it replaces in old (if not nil).
func setRawAction(s syscall.Signal, handler uintptr, old *sigaction) error {
	sa := sigaction{
		handler: handler,
		// On the signal stack the runtime gives every thread: the
		// goroutine stack the signal interrupts may be too small for
		// the kernel's signal frame.
		flags:    saSiginfo | saOnstack | saRestart | saRestorer,
		restorer: rawSigReturnPC,
		mask:     ^uint64(0), // nothing nests in the handler
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(old)), 8, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// execSignals are the signals an upgrade's re-exec must not lose. From
// just before the last look at the signal channel to execve, each one a
// thread of this image catches is written by the raw handler to a pipe
// whose read end the next image inherits and reads at start (envExecPipe),
// instead of going through the runtime, which would queue it for a
// goroutine that never runs again. Once every thread blocks them
// (holdexec.go), nothing is caught any more: they stay pending.
var execSignals = []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// envExecPipe names the read end of that pipe for the next image.
const envExecPipe = "MWORKER_EXEC_PIPE"

// execCatch is the state of catchForExec, to undo after a failed execve.
type execCatch struct {
	r, w  int
	oldFd int32
	old   []sigaction
}

// catchForExec points the raw handler at a new pipe and installs it for
// execSignals. The read end is not close-on-exec.
func catchForExec() (*execCatch, error) {
	if rawSigHandlerPC == 0 || rawSigFd == 0 {
		return nil, errors.New("no raw signal handler here")
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETFD, 0); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, err
	}
	c := &execCatch{r: p[0], w: p[1], oldFd: rawSigFd}
	rawSigFd = int32(p[1])
	sa := sigaction{
		handler:  rawSigHandlerPC,
		flags:    saSiginfo | saOnstack | saRestart | saRestorer,
		restorer: rawSigReturnPC,
		mask:     ^uint64(0),
	}
	for _, s := range execSignals {
		var old sigaction
		if _, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&old)), 8, 0, 0); errno != 0 {
			c.undo()
			return nil, errno
		}
		c.old = append(c.old, old)
	}
	return c, nil
}

// undo gives the signals back to the runtime and returns what the pipe
// caught meanwhile, after a failed execve.
func (c *execCatch) undo() []syscall.Signal {
	for i, old := range c.old {
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(execSignals[i]), uintptr(unsafe.Pointer(&old)), 0, 8, 0, 0)
	}
	rawSigFd = c.oldFd
	sigs := readSignalPipe(c.r)
	unix.Close(c.r)
	unix.Close(c.w)
	return sigs
}

// readSignalPipe reads, without blocking, the signal numbers in the pipe.
func readSignalPipe(fd int) []syscall.Signal {
	var out []syscall.Signal
	buf := make([]byte, 64)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			return out
		}
		for _, b := range buf[:n] {
			out = append(out, syscall.Signal(b))
		}
	}
}

// takeExecPipe reads the signals the previous image's handler caught in
// its last moments (envExecPipe), and closes the pipe.
func takeExecPipe(v string) []syscall.Signal {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	unix.SetNonblock(fd, true)
	sigs := readSignalPipe(fd)
	unix.Close(fd)
	return sigs
}
