package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// The environment variables that carry the control socket across a
// re-exec. They are internal: the event loop removes them from the
// workers' environment.
const (
	// EnvListenerFD is the fd number of the listening socket.
	EnvListenerFD = "MWORKER_CONTROL_FD"
	// EnvPending lists the waiting reload clients as ID:FD pairs joined by
	// commas, e.g. "4:9,5:10".
	EnvPending = "MWORKER_CONTROL_PENDING"
	// EnvNextID is the last request ID given out, so that the new image
	// never reuses one the machine may still answer.
	EnvNextID = "MWORKER_CONTROL_LAST_ID"
)

// EnvNames are every variable this package puts in the environment.
var EnvNames = []string{EnvListenerFD, EnvPending, EnvNextID}

// Handoff is the control socket's part of a re-exec: the variables to add
// to the new image's environment, and the fds made inheritable for it.
type Handoff struct {
	// Env is KEY=VALUE entries for execve's environment.
	Env []string
	fds []int
}

// PrepareExec makes the listener and the pending clients' connections
// survive execve (it clears their close-on-exec flag) and names them in
// Handoff.Env. Call it just before execve, with the clients of the
// requests in fsm.Handover.Requests; any other client is closed by the
// exec. If execve fails, call Undo.
func (l *Listener) PrepareExec(pending map[fsm.RequestID]*Conn) (*Handoff, error) {
	h := &Handoff{}
	lfd, err := rawFD(l.ln)
	if err != nil {
		return nil, err
	}
	ids := make([]fsm.RequestID, 0, len(pending))
	for id := range pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pairs := make([]string, 0, len(ids))
	fds := []int{lfd}
	for _, id := range ids {
		fd, err := rawFD(pending[id].c)
		if err != nil {
			return nil, err
		}
		fds = append(fds, fd)
		pairs = append(pairs, strconv.FormatUint(uint64(id), 10)+":"+strconv.Itoa(fd))
	}
	for _, fd := range fds {
		if err := setCloseOnExec(fd, false); err != nil {
			h.Undo()
			return nil, err
		}
		h.fds = append(h.fds, fd)
	}
	h.Env = []string{
		EnvListenerFD + "=" + strconv.Itoa(lfd),
		EnvPending + "=" + strings.Join(pairs, ","),
		EnvNextID + "=" + strconv.FormatUint(l.nextID.Load(), 10),
	}
	return h, nil
}

// Undo makes the fds of h close-on-exec again, after a failed execve, so
// that they do not leak into the workers spawned later.
func (h *Handoff) Undo() error {
	var errs []error
	for _, fd := range h.fds {
		errs = append(errs, setCloseOnExec(fd, true))
	}
	h.fds = nil
	return errors.Join(errs...)
}

// Open is Listen(path) on a fresh start. In an image started by a re-exec
// (EnvListenerFD is set), it takes over the inherited listener and
// returns the clients still waiting for their reload's outcome, by
// request ID. Either way it unsets EnvNames in this process.
func Open(path string) (*Listener, map[fsm.RequestID]*Conn, error) {
	lv, inherited := os.LookupEnv(EnvListenerFD)
	pv, nv := os.Getenv(EnvPending), os.Getenv(EnvNextID)
	for _, k := range EnvNames {
		os.Unsetenv(k)
	}
	if !inherited {
		l, err := Listen(path)
		return l, nil, err
	}
	l, err := importListener(path, lv)
	if err != nil {
		return nil, nil, err
	}
	if nv != "" {
		last, err := strconv.ParseUint(nv, 10, 64)
		if err != nil {
			l.ln.Close()
			return nil, nil, fmt.Errorf("control: bad %s=%q from the previous image: %w", EnvNextID, nv, err)
		}
		l.nextID.Store(last)
	}
	pending, err := importPending(pv)
	if err != nil {
		l.ln.Close()
		return nil, nil, err
	}
	for id := range pending {
		if uint64(id) > l.nextID.Load() {
			l.nextID.Store(uint64(id))
		}
	}
	return l, pending, nil
}

func importListener(path, v string) (*Listener, error) {
	fd, err := parseFD(EnvListenerFD, v)
	if err != nil {
		return nil, err
	}
	if ok, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || ok != 1 {
		return nil, fmt.Errorf("control: inherited fd %d (%s) is not a listening socket", fd, EnvListenerFD)
	}
	sa, err := unix.Getsockname(fd)
	if u, ok := sa.(*unix.SockaddrUnix); err != nil || !ok || u.Name != path {
		return nil, fmt.Errorf("control: inherited fd %d is not the control socket %s: start mworker afresh", fd, path)
	}
	f := os.NewFile(uintptr(fd), path)
	ln, err := net.FileListener(f) // dups fd, close-on-exec
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("control: inherited control socket %s: %w", path, err)
	}
	l := newListener(path, ln.(*net.UnixListener))
	if err := l.statPath(); err != nil {
		l.ln.Close()
		return nil, err
	}
	return l, nil
}

func importPending(v string) (map[fsm.RequestID]*Conn, error) {
	pending := make(map[fsm.RequestID]*Conn)
	if v == "" {
		return pending, nil
	}
	var errs []error
	for pair := range strings.SplitSeq(v, ",") {
		idText, fdText, ok := strings.Cut(pair, ":")
		id, err := strconv.ParseUint(idText, 10, 64)
		if !ok || err != nil || id == 0 {
			errs = append(errs, fmt.Errorf("control: bad pair %q in %s=%q", pair, EnvPending, v))
			continue
		}
		fd, err := parseFD(EnvPending, fdText)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f := os.NewFile(uintptr(fd), "control client")
		c, err := net.FileConn(f) // dups fd, close-on-exec
		f.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("control: inherited client fd %d: %w", fd, err))
			continue
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			errs = append(errs, fmt.Errorf("control: inherited client fd %d is not a unix socket", fd))
			continue
		}
		pending[fsm.RequestID(id)] = &Conn{c: uc}
	}
	if len(errs) > 0 {
		for _, c := range pending {
			c.Close()
		}
		return nil, errors.Join(errs...)
	}
	return pending, nil
}

func parseFD(name, v string) (int, error) {
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return 0, fmt.Errorf("control: bad fd %q in %s from the previous image", v, name)
	}
	return fd, nil
}

// rawFD is the fd under a socket; it stays valid while the socket is open.
func rawFD(c syscall.Conn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("control: %w", err)
	}
	fd := -1
	if err := rc.Control(func(u uintptr) { fd = int(u) }); err != nil {
		return 0, fmt.Errorf("control: %w", err)
	}
	return fd, nil
}

func setCloseOnExec(fd int, on bool) error {
	flag := 0
	if on {
		flag = unix.FD_CLOEXEC
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flag); err != nil {
		return fmt.Errorf("control: fd %d: set close-on-exec %v: %w", fd, on, err)
	}
	return nil
}
