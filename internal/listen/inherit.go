package listen

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// EnvInherited names the variable that carries the listeners across the
// master's re-exec: "FD=NAME" entries joined by ':' (names hold no ':').
// It is internal: never pass it to a worker.
const EnvInherited = "MWORKER_LISTENERS"

// Encode describes the listeners for EnvInherited. Their descriptors must
// stay open and be made to survive the exec (KeepOnExec).
func Encode(ls []Listener) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strconv.Itoa(int(l.File.Fd())))
		b.WriteByte('=')
		b.WriteString(l.Name)
	}
	return b.String()
}

// Decode takes over the descriptors an earlier image described with
// Encode: each must be open; it is set close-on-exec again and described
// by getsockname(2). An empty value gives no listeners.
func Decode(value string) ([]Listener, error) {
	if value == "" {
		return nil, nil
	}
	entries := strings.Split(value, ":")
	ls := make([]Listener, 0, len(entries))
	seen := make(map[int]bool, len(entries))
	for _, e := range entries {
		fdText, name, ok := strings.Cut(e, "=")
		fd, err := strconv.Atoi(fdText)
		if !ok || err != nil || fd < 3 {
			return nil, fmt.Errorf("listen: %s=%q: entry %q is not FD=NAME with FD >= 3", EnvInherited, value, e)
		}
		if seen[fd] {
			return nil, fmt.Errorf("listen: %s=%q: fd %d is listed twice", EnvInherited, value, fd)
		}
		seen[fd] = true
		l, err := adopt(fd, name)
		if err != nil {
			return nil, fmt.Errorf("listen: %s: %w", EnvInherited, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// Inherited takes over the listeners of the image that exec'd this one:
// it decodes EnvInherited and unsets it. With the variable unset it
// returns no listeners and no error.
func Inherited() ([]Listener, error) {
	value, ok := os.LookupEnv(EnvInherited)
	if !ok {
		return nil, nil
	}
	if err := os.Unsetenv(EnvInherited); err != nil {
		return nil, fmt.Errorf("listen: unset %s: %w", EnvInherited, err)
	}
	return Decode(value)
}

// Files lists the listeners' files in order.
func Files(ls []Listener) []*os.File {
	files := make([]*os.File, len(ls))
	for i, l := range ls {
		files[i] = l.File
	}
	return files
}

// Dup returns a close-on-exec duplicate of c's descriptor (a net.Conn or
// net.Listener, such as the control socket) to hand to KeepOnExec. Use it
// instead of the File methods of package net: the Fd method of their
// file puts the socket, shared with c, into blocking mode, after which
// c's reads and accepts tie up a thread and c's Close waits for them,
// which after a failed exec is forever. Dup's file leaves the mode alone.
func Dup(c syscall.Conn) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("listen: dup: %w", err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 3)
	}); err != nil {
		return nil, fmt.Errorf("listen: dup: %w", err)
	}
	if derr != nil {
		return nil, fmt.Errorf("listen: dup: fcntl(F_DUPFD_CLOEXEC): %w", derr)
	}
	return os.NewFile(uintptr(nfd), "dup"), nil
}

// KeepOnExec clears close-on-exec on every file so that it survives
// execve(2). Call it on the thread that execs, just before the exec, with
// no fork in between (a child forked meanwhile would inherit the files);
// if the exec fails, call CloseOnExec. It stops at the first error and
// sets close-on-exec back on the files it had changed.
func KeepOnExec(files []*os.File) error {
	for i, f := range files {
		if err := setCloseOnExec(f, false); err != nil {
			_ = CloseOnExec(files[:i])
			return err
		}
	}
	return nil
}

// CloseOnExec sets close-on-exec on every file: after a failed exec, and
// on descriptors taken over from another image.
func CloseOnExec(files []*os.File) error {
	var errs []error
	for _, f := range files {
		errs = append(errs, setCloseOnExec(f, true))
	}
	return errors.Join(errs...)
}

func setCloseOnExec(f *os.File, on bool) error {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return fmt.Errorf("listen: fcntl(%d, F_GETFD): %w", fd, err)
	}
	want := flags &^ unix.FD_CLOEXEC
	if on {
		want = flags | unix.FD_CLOEXEC
	}
	if want == flags {
		return nil
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, want); err != nil {
		return fmt.Errorf("listen: fcntl(%d, F_SETFD): %w", fd, err)
	}
	return nil
}

// adopt wraps an inherited descriptor: close-on-exec set, its blocking
// mode left as the giver set it.
func adopt(fd int, name string) (Listener, error) {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		return Listener{}, fmt.Errorf("fd %d (%q) is not open: %w", fd, name, err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
		return Listener{}, fmt.Errorf("fd %d: fcntl(F_SETFD): %w", fd, err)
	}
	network, address, err := describe(fd)
	if err != nil {
		return Listener{}, fmt.Errorf("fd %d (%q): getsockname: %w", fd, name, err)
	}
	f, err := newFileKeepMode(fd, network+"://"+address)
	if err != nil {
		return Listener{}, err
	}
	return Listener{Name: name, Network: network, Address: address, File: f}, nil
}

// newFileKeepMode wraps fd in an *os.File that stays out of the runtime
// poller, without touching its O_NONBLOCK flag, which it shares with the
// workers (the flag belongs to the open file description, not to the
// descriptor). os.NewFile registers a non-blocking descriptor with the
// process's epoll set, and every connection arriving on a listening
// socket would then wake the master's poller for nothing: the master
// never accepts. So a non-blocking descriptor is not wrapped as it is:
// for the moment of os.NewFile, a blocking placeholder socket takes its
// number (dup3), and the listening socket, kept at another number, is
// then put back (dup3 again). The file owns fd.
//
// An earlier version made the description blocking for a moment and
// restored it. A Go worker that called accept4 in that moment blocked in
// the kernel, and its Close of the listener, in a drain, then waited for
// that call until --stop-timeout killed it.
func newFileKeepMode(fd int, name string) (*os.File, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, fmt.Errorf("fd %d: fcntl(F_GETFL): %w", fd, err)
	}
	if fl&unix.O_NONBLOCK == 0 {
		return os.NewFile(uintptr(fd), name), nil
	}
	// Keep the socket aside, put a blocking placeholder at fd, wrap it,
	// and put the socket back at fd: the file owns fd, out of the poller.
	saved, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("fd %d: fcntl(F_DUPFD_CLOEXEC): %w", fd, err)
	}
	defer unix.Close(saved)
	ph, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fd %d: a placeholder socket: %w", fd, err)
	}
	err = unix.Dup3(ph, fd, unix.O_CLOEXEC)
	unix.Close(ph)
	if err != nil {
		return nil, fmt.Errorf("fd %d: dup3 of a placeholder: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), name) // blocking: not in the poller
	if err := unix.Dup3(saved, fd, unix.O_CLOEXEC); err != nil {
		f.Close()
		return nil, fmt.Errorf("fd %d: dup3 back: %w", fd, err)
	}
	return f, nil
}
