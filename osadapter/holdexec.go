package osadapter

import (
	"errors"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An upgrade re-executes the master with execve. Until the new image has
// called signal.Notify, the stop and reload signals must neither be caught
// by this image (its runtime would queue them for a goroutine that never
// runs again) nor reach the new one while it cannot handle them. This file
// holds them pending across execve: every thread of the process blocks
// them, and no thread can start between the block and execve.
//
// Both halves need care in Go:
//
//   - A thread's mask changed by rt_sigprocmask from inside a signal
//     handler does not last: the return from the handler restores the mask
//     the kernel saved in the ucontext. syscall.AllThreadsSyscall works
//     that way (and refuses to run in a cgo build). So each thread is sent
//     maskSignal, whose handler (rawMaskHandler, rawsig_*.s) edits the
//     saved mask itself; the kernel applies it as the handler returns.
//   - The runtime starts threads whenever it likes, each with the mask of
//     the process's start. Its exec lock (syscall.runtime_BeforeExec, what
//     syscall.Exec takes) stops thread creation until execve. holdExec
//     takes that lock, so it must do the exec itself: nothing between the
//     lock and execve may allocate or block on the scheduler.

// runtimeBeforeExec and runtimeAfterExec are the runtime's exec lock, as
// syscall.Exec takes and releases it.
//
//go:linkname runtimeBeforeExec syscall.runtime_BeforeExec
func runtimeBeforeExec()

//go:linkname runtimeAfterExec syscall.runtime_AfterExec
func runtimeAfterExec()

// Defined in rawsig_*.s.
var rawMaskHandlerPC uintptr

// What rawMaskHandler adds to and removes from the mask of the thread it
// runs on, and how many times it has run.
var (
	rawMaskBlock, rawMaskUnblock uint64
	rawMaskAcks                  uint32
)

// maskSignal is the signal each thread is sent to change its mask: 33, the
// one the runtime keeps unblocked in every thread whatever mask the process
// started with (syscall.AllThreadsSyscall's, and the C library's for
// setuid). Its handler is mworker's only while a change runs; a 33 sent
// from outside meanwhile is taken as one more request, which changes
// nothing.
const maskSignal = 33

// maskWaitRounds bounds the wait for every thread to run the handler:
// rounds of maskPause, about 1 s in all. A thread that exits after being
// sent the signal never answers; past the bound the change goes on with
// what has answered.
const (
	maskWaitRounds = 20000
	maskPause      = 50_000 // ns
)

var errMaskTimeout = errors.New("not every thread answered the signal mask change within 1 s")

// threadMasker changes the signal masks of the process's other threads. It
// is allocated before the exec lock is taken: its methods allocate nothing
// and make only raw system calls.
type threadMasker struct {
	dir  int // /proc/self/task
	self int32
	buf  [4096]byte
	// seen are the threads the last full pass reached; a pass with onlyNew
	// skips them.
	seen  [256]int32
	nseen int
	old   sigaction
	// For reading a thread's SigBlk from /proc without allocating.
	path [64]byte
	sbuf [4096]byte
}

func newThreadMasker() (*threadMasker, error) {
	if rawMaskHandlerPC == 0 {
		return nil, errors.New("no raw signal handler for this architecture")
	}
	dir, err := unix.Open("/proc/self/task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &threadMasker{dir: dir, self: int32(unix.Gettid())}, nil
}

func (m *threadMasker) close() { unix.Close(m.dir) }

func (m *threadMasker) isSeen(tid int32) bool {
	for _, s := range m.seen[:m.nseen] {
		if s == tid {
			return true
		}
	}
	return false
}

// change adds block to and removes unblock from the mask of every other
// thread of the process (with onlyNew, of those the last full pass did not
// reach) and waits until each has done it. The caller's own mask is its
// business: rt_sigprocmask. A listing of /proc/self/task can miss a thread
// when another exits meanwhile (the kernel resumes the listing by
// position), so passes over the threads not reached yet follow until one
// finds none (at most maxMaskPasses).
func (m *threadMasker) change(block, unblock uint64, onlyNew bool) (int, error) {
	atomic.StoreUint64(&rawMaskBlock, block)
	atomic.StoreUint64(&rawMaskUnblock, unblock)
	sa := sigaction{
		handler:  rawMaskHandlerPC,
		flags:    saSiginfo | saOnstack | saRestart | saRestorer,
		restorer: rawSigReturnPC,
		mask:     ^uint64(0),
	}
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, maskSignal, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&m.old)), kernelSigsetSize, 0, 0); e != 0 {
		return 0, e
	}
	defer unix.RawSyscall6(unix.SYS_RT_SIGACTION, maskSignal, uintptr(unsafe.Pointer(&m.old)), 0, kernelSigsetSize, 0, 0)

	if !onlyNew {
		m.nseen = 0
	}
	total := 0
	for pass := 0; pass < maxMaskPasses; pass++ {
		sent, err := m.pass(onlyNew || pass > 0)
		total += sent
		if err != nil && !errors.Is(err, errMaskTimeout) {
			return total, err
		}
		if sent == 0 {
			break
		}
	}
	// The handlers' count says every thread ran one, but it has been seen
	// to run ahead of a thread now and then (a handler signal queued by an
	// earlier change running under this one's count); what counts is the
	// mask the kernel shows, so each thread reached is checked in /proc
	// and sent the signal again until its mask is right.
	pause := unix.Timespec{Nsec: maskPause}
	for round := 0; ; round++ {
		if m.wrong(block, unblock) == 0 {
			return total, nil
		}
		if round == maskWaitRounds {
			return total, errMaskTimeout
		}
		unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&pause)), 0, 0)
	}
}

// wrong counts the threads reached whose mask does not show the change
// yet, and sends each of them the signal again. A thread running a
// handler shows every signal blocked: for an unblock it is not done yet.
func (m *threadMasker) wrong(block, unblock uint64) int {
	pid := uintptr(unix.Getpid())
	bad := 0
	for _, tid := range m.seen[:m.nseen] {
		mask, ok := m.sigBlk(tid)
		if !ok {
			continue // exited
		}
		if mask&block != block || mask&unblock != 0 {
			bad++
			unix.RawSyscall(unix.SYS_TGKILL, pid, uintptr(tid), maskSignal)
		}
	}
	return bad
}

// sigBlk reads thread tid's blocked signals from /proc/self/task/TID/status
// with raw system calls into the masker's buffers.
func (m *threadMasker) sigBlk(tid int32) (uint64, bool) {
	n := copy(m.path[:], "/proc/self/task/")
	var digits [10]byte
	d := len(digits)
	for v := tid; ; v /= 10 {
		d--
		digits[d] = byte('0' + v%10)
		if v < 10 {
			break
		}
	}
	n += copy(m.path[n:], digits[d:])
	n += copy(m.path[n:], "/status")
	m.path[n] = 0
	fd, _, e := unix.RawSyscall6(unix.SYS_OPENAT, uintptr(atFdcwd), uintptr(unsafe.Pointer(&m.path[0])), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if e != 0 {
		return 0, false
	}
	got := 0
	for got < len(m.sbuf) {
		r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&m.sbuf[got])), uintptr(len(m.sbuf)-got))
		if e != 0 || r == 0 {
			break
		}
		got += int(r)
	}
	unix.RawSyscall(unix.SYS_CLOSE, fd, 0, 0)
	const key = "SigBlk:\t"
	for i := 0; i+len(key)+16 <= got; i++ {
		if m.sbuf[i] != 'S' || string(m.sbuf[i:i+len(key)]) != key {
			continue
		}
		var v uint64
		for _, c := range m.sbuf[i+len(key) : i+len(key)+16] {
			switch {
			case c >= '0' && c <= '9':
				v = v<<4 | uint64(c-'0')
			case c >= 'a' && c <= 'f':
				v = v<<4 | uint64(c-'a'+10)
			default:
				return 0, false
			}
		}
		return v, true
	}
	return 0, false
}

// atFdcwd is AT_FDCWD as a variable: a negative constant does not convert
// to uintptr.
var atFdcwd = unix.AT_FDCWD

// maxMaskPasses bounds change's passes.
const maxMaskPasses = 8

// pass sends maskSignal to every thread listed now (with onlyNew, those
// not reached by an earlier pass) and waits until each has run the
// handler.
func (m *threadMasker) pass(onlyNew bool) (int, error) {
	atomic.StoreUint32(&rawMaskAcks, 0)
	pid := uintptr(unix.Getpid())
	sent := 0
	if _, _, e := unix.RawSyscall(unix.SYS_LSEEK, uintptr(m.dir), 0, 0); e != 0 {
		return 0, e
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_GETDENTS64, uintptr(m.dir), uintptr(unsafe.Pointer(&m.buf[0])), uintptr(len(m.buf)))
		if e != 0 {
			return sent, e
		}
		if n == 0 {
			break
		}
		for off := 0; off < int(n); {
			// struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2),
			// d_type (1), d_name (NUL-terminated).
			reclen := int(m.buf[off+16]) | int(m.buf[off+17])<<8
			tid := int32(0)
			ok := true
			for i := off + 19; i < off+reclen && m.buf[i] != 0; i++ {
				c := m.buf[i]
				if c < '0' || c > '9' {
					ok = false // "." and ".."
					break
				}
				tid = tid*10 + int32(c-'0')
			}
			off += reclen
			if !ok || tid == 0 || tid == m.self || (onlyNew && m.isSeen(tid)) {
				continue
			}
			if _, _, e := unix.RawSyscall(unix.SYS_TGKILL, pid, uintptr(tid), maskSignal); e != 0 {
				continue // exited since the listing
			}
			sent++
			if m.nseen < len(m.seen) {
				m.seen[m.nseen] = tid
				m.nseen++
			}
		}
	}
	pause := unix.Timespec{Nsec: maskPause}
	for round := 0; int(atomic.LoadUint32(&rawMaskAcks)) < sent; round++ {
		if round == maskWaitRounds {
			return sent, errMaskTimeout
		}
		unix.RawSyscall(unix.SYS_NANOSLEEP, uintptr(unsafe.Pointer(&pause)), 0, 0)
	}
	return sent, nil
}

// blockAllThreads blocks set in every thread of the process (for the
// calling one, its own rt_sigprocmask), and unblockAllThreads unblocks it.
// A thread that starts afterwards has the runtime's mask for new threads.
func blockAllThreads(set *unix.Sigset_t) error   { return allThreads(set.Val[0], 0) }
func unblockAllThreads(set *unix.Sigset_t) error { return allThreads(0, set.Val[0]) }

func allThreads(block, unblock uint64) error {
	m, err := newThreadMasker()
	if err != nil {
		return err
	}
	defer m.close()
	if _, err := m.change(block, unblock, false); err != nil {
		return err
	}
	if block != 0 {
		return rtSigprocmask(unix.SIG_BLOCK, block)
	}
	return rtSigprocmask(unix.SIG_UNBLOCK, unblock)
}

func rtSigprocmask(how int, bits uint64) error {
	set := bits
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGPROCMASK, uintptr(how), uintptr(unsafe.Pointer(&set)), 0, kernelSigsetSize, 0, 0); e != 0 {
		return e
	}
	return nil
}

// stopPendingError is holdExec's answer when a stop signal was pending
// once every thread blocked it: the exec did not happen, and the signal is
// still pending, blocked in every thread (unblock it to have it delivered).
type stopPendingError struct{ sig syscall.Signal }

func (e *stopPendingError) Error() string {
	return "signal " + strconv.Itoa(int(e.sig)) + " pending"
}

// holdStops are the signals whose pending instance at execve would kill
// the next image before its runtime can catch them (the runtime unblocks
// them at start): holdExec does not exec with one pending.
var holdStops = [...]syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}

// holdExec replaces the process image with path, as syscall.Exec does,
// with held blocked in every thread from before its last look at what is
// pending until execve, and no thread started in between: a signal in held
// that arrives from the block on stays pending for the new image. If one of
// holdStops is pending at that look, it does not exec and returns a
// *stopPendingError. Whatever it returns, held stays blocked in every
// thread: the caller unblocks it (unblockAllThreads) once it has given the
// signals back to the runtime.
//
// The caller is locked to its thread (the loop is).
func holdExec(path string, argv, env []string, held *unix.Sigset_t) error {
	argv0p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envvp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	m, err := newThreadMasker()
	if err != nil {
		return err
	}
	defer m.close()
	bits := held.Val[0]
	if err := rtSigprocmask(unix.SIG_BLOCK, bits); err != nil {
		return err
	}
	// The slow part (every thread runs the handler, which may take the
	// scheduler a while under load) runs before the lock, where the
	// runtime may preempt this goroutine and start threads freely; under
	// the lock only the threads started since are sent the signal.
	_, err = m.change(bits, 0, false)
	if err != nil && !errors.Is(err, errMaskTimeout) {
		return err
	}
	restoreNofileLimit()

	runtimeBeforeExec()
	m.change(bits, 0, true)
	var pending uint64
	unix.RawSyscall(unix.SYS_RT_SIGPENDING, uintptr(unsafe.Pointer(&pending)), kernelSigsetSize, 0)
	for _, s := range holdStops {
		if pending&(1<<(s-1)) != 0 {
			runtimeAfterExec()
			return &stopPendingError{sig: s}
		}
	}
	_, _, e := unix.RawSyscall(unix.SYS_EXECVE,
		uintptr(unsafe.Pointer(argv0p)),
		uintptr(unsafe.Pointer(&argvp[0])),
		uintptr(unsafe.Pointer(&envvp[0])))
	runtimeAfterExec()
	return e
}

// restoreNofileLimit puts back the soft RLIMIT_NOFILE the process started
// with, which the Go runtime raised at start and which syscall.Exec would
// restore before execve (so that the next image, and the workers it
// spawns, start from the original). The runtime keeps the original to
// itself; an execve of the empty path through syscall.Exec restores it and
// fails at once (ENOENT) without replacing anything. From then on the
// master runs with the original limit, which is also what its workers
// inherit, as before.
func restoreNofileLimit() {
	_ = syscall.Exec("", nil, nil)
}
