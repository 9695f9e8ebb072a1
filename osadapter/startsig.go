package osadapter

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The signal mask and dispositions this process was started with are gone
// before any of its Go code runs: the runtime, while it starts, unblocks in
// every thread the signals it needs (SIGTERM, SIGINT, SIGHUP, SIGQUIT,
// SIGILL, SIGSEGV, SIGBUS, SIGFPE, SIGTRAP, SIGCHLD, SIGPROF, SIGURG, ...)
// and installs its own handler over an inherited SIG_IGN of every signal
// but SIGHUP and SIGINT. It keeps what it found in two variables of its
// own, runtime.initSigmask (the mask) and runtime.fwdSig (each signal's
// handler before its own), which no API exposes and the linker forbids
// naming. startSignals reads them from this process's memory
// (/proc/self/mem) at the addresses the binary's symbol table gives, and
// checks what it read: the sizes must be those of this runtime, and every
// handler SIG_DFL or SIG_IGN, as execve leaves them.
//
// A binary stripped of its symbol table (go build -ldflags=-s) cannot be
// read: then the caller falls back to what it can still see (the thread's
// mask, the SIG_IGN the runtime left in place).

// errNoSymbols says the binary has no symbol table.
var errNoSymbols = errors.New("the binary has no symbol table (built with -ldflags=-s?)")

// startAnchor is a variable whose address tells where the binary was loaded
// (a position-independent executable is loaded anywhere).
var startAnchor byte

const (
	symFwdSig      = "runtime.fwdSig"
	symInitSigmask = "runtime.initSigmask"
	symAnchor      = "github.com/mworker/mworker/osadapter.startAnchor"
)

// startSignals returns the mask and the SIG_IGN signals (1..64) this
// process was started with.
func startSignals() (mask uint64, ignored []syscall.Signal, err error) {
	syms, err := elfSymbols("/proc/self/exe", symFwdSig, symInitSigmask, symAnchor)
	if err != nil {
		return 0, nil, err
	}
	fwd, init, anchor := syms[symFwdSig], syms[symInitSigmask], syms[symAnchor]
	switch {
	case anchor.value == 0:
		return 0, nil, fmt.Errorf("symbol %s not found", symAnchor)
	case fwd.size != 65*8:
		return 0, nil, fmt.Errorf("symbol %s has size %d, want %d: not the runtime this code knows", symFwdSig, fwd.size, 65*8)
	case init.size != 8:
		return 0, nil, fmt.Errorf("symbol %s has size %d, want 8: not the runtime this code knows", symInitSigmask, init.size)
	}
	bias := uint64(uintptr(unsafe.Pointer(&startAnchor))) - anchor.value
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		return 0, nil, err
	}
	defer mem.Close()
	buf := make([]byte, fwd.size+init.size)
	if _, err := mem.ReadAt(buf[:fwd.size], int64(fwd.value+bias)); err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", symFwdSig, err)
	}
	if _, err := mem.ReadAt(buf[fwd.size:], int64(init.value+bias)); err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", symInitSigmask, err)
	}
	for sig := 1; sig <= 64; sig++ {
		h := binary.LittleEndian.Uint64(buf[sig*8:])
		if h != 0 && h == uint64(rawEarlyHandlerPC) {
			// signal.Notify of a signal the runtime had left alone (the
			// stop signals, SIGCONT) records the handler it finds, the
			// early catch's (internal/earlysig): what was there before it
			// is the start's.
			h = uint64(earlyOld(sig).handler)
		}
		switch h {
		case 0: // SIG_DFL
		case 1: // SIG_IGN
			ignored = append(ignored, syscall.Signal(sig))
		default:
			return 0, nil, fmt.Errorf("%s[%d] is %#x, neither SIG_DFL nor SIG_IGN: not the runtime this code knows", symFwdSig, sig, h)
		}
	}
	return binary.LittleEndian.Uint64(buf[fwd.size:]), ignored, nil
}

type elfSym struct{ value, size uint64 }

// elfSymbols finds names in the symbol table of the 64-bit little-endian
// ELF file at path (every architecture mworker supports), without loading
// the whole table as debug/elf would.
func elfSymbols(path string, names ...string) (map[string]elfSym, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var eh [64]byte
	if _, err := f.ReadAt(eh[:], 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if string(eh[:4]) != "\x7fELF" || eh[4] != 2 || eh[5] != 1 {
		return nil, errors.New("not a 64-bit little-endian ELF file")
	}
	shoff, shentsize, shnum := le.Uint64(eh[0x28:]), uint64(le.Uint16(eh[0x3a:])), uint64(le.Uint16(eh[0x3c:]))
	if shentsize < 64 || shnum == 0 || shnum > 1<<12 {
		return nil, errors.New("malformed ELF section headers")
	}
	sh := make([]byte, shentsize*shnum)
	if _, err := f.ReadAt(sh, int64(shoff)); err != nil {
		return nil, err
	}
	section := func(i uint64) (typ uint32, off, size, link uint64) {
		h := sh[i*shentsize:]
		return le.Uint32(h[4:]), le.Uint64(h[0x18:]), le.Uint64(h[0x20:]), uint64(le.Uint32(h[0x28:]))
	}
	for i := range shnum {
		typ, off, size, link := section(i)
		if typ != 2 { // SHT_SYMTAB
			continue
		}
		if link >= shnum || size > 1<<28 {
			return nil, errors.New("malformed ELF symbol table")
		}
		_, stroff, strsize, _ := section(link)
		if strsize > 1<<28 {
			return nil, errors.New("malformed ELF string table")
		}
		symtab := make([]byte, size)
		strtab := make([]byte, strsize)
		if _, err := f.ReadAt(symtab, int64(off)); err != nil && err != io.EOF {
			return nil, err
		}
		if _, err := f.ReadAt(strtab, int64(stroff)); err != nil && err != io.EOF {
			return nil, err
		}
		out := make(map[string]elfSym, len(names))
		for s := 0; s+24 <= len(symtab); s += 24 {
			name := uint64(le.Uint32(symtab[s:]))
			if name >= uint64(len(strtab)) {
				continue
			}
			for _, want := range names {
				end := name + uint64(len(want))
				if end < uint64(len(strtab)) && strtab[end] == 0 && string(strtab[name:end]) == want {
					out[want] = elfSym{le.Uint64(symtab[s+8:]), le.Uint64(symtab[s+16:])}
				}
			}
		}
		return out, nil
	}
	return nil, errNoSymbols
}

// setIgnored sets each of sigs to SIG_IGN with a raw rt_sigaction: the
// runtime's signal.Ignore leaves alone the signals it needs (SIGSEGV,
// SIGPROF, ...). For a process about to execve, which keeps SIG_IGN.
func setIgnored(sigs []syscall.Signal) error {
	// struct sigaction as the kernel takes it: handler, flags, restorer,
	// mask.
	sa := [4]uint64{1}
	for _, s := range sigs {
		if s == syscall.SIGKILL || s == syscall.SIGSTOP {
			continue
		}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), 0, kernelSigsetSize, 0, 0); e != 0 {
			return fmt.Errorf("ignore signal %d: %w", s, e)
		}
	}
	return nil
}
