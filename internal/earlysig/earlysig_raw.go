//go:build linux && (amd64 || arm64)

package earlysig

import "unsafe"

// Defined in earlysig_linux_*.s.
var handlerPC, returnPC uintptr

//go:noescape
func rawSigaction(sig uintptr, act, old unsafe.Pointer) uintptr

//go:noescape
func rawPipe2(p *[2]int32, flags uintptr) uintptr
func rawClose(fd uintptr) uintptr

//go:noescape
func rawClockGettime(clock uintptr, ts *[2]int64) uintptr

const (
	oNonblock  = 0x800
	oCloexec   = 0x80000
	saSiginfo  = 0x4
	saRestorer = 0x04000000
	saOnstack  = 0x08000000
	saRestart  = 0x10000000
)

func clockMonotonic(ts *[2]int64) bool { return rawClockGettime(1, ts) == 0 }

func closeFd(fd int32) { rawClose(uintptr(fd)) }

func init() {
	InitAt = Monotonic()
	var p [2]int32
	if rawPipe2(&p, oNonblock|oCloexec) != 0 {
		return
	}
	ReadFd, WriteFd = p[0], p[1]
	for i := range sigBytes {
		sigBytes[i] = byte(i)
	}
	HandlerPC = handlerPC
	sa := Action{
		Handler: handlerPC,
		// On the signal stack the runtime gives every thread: the
		// goroutine stack the signal interrupts may be too small for
		// the kernel's signal frame.
		Flags:    saSiginfo | saOnstack | saRestart | saRestorer,
		Restorer: returnPC,
		Mask:     ^uint64(0), // nothing nests in the handler
	}
	// Signal 34 last: nothing before this package catches it (the
	// runtime leaves it at SIG_DFL), so SigCgt in /proc/PID/status tells
	// from outside when every signal is caught.
	for i := 1; i <= 64; i++ {
		n := i
		switch {
		case n == 9 || n == 19 || n == 23 || n == 33: // KILL, STOP, URG, the runtime's
			continue
		case n == 34:
			continue
		case n == 64:
			catch(n, &sa)
			n = 34
		}
		catch(n, &sa)
	}
	DoneAt = Monotonic()
}

// catch installs sa for signal n, keeping what was there in Old and Fwd.
func catch(n int, sa *Action) {
	if !sigaction(n, nil, &Old[n]) {
		return
	}
	if Old[n].Handler > 1 {
		Fwd[n] = Old[n].Handler
	}
	if sigaction(n, sa, &Old[n]) {
		Caught |= 1 << (n - 1)
	}
}
