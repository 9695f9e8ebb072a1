package control

import (
	"encoding/hex"
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
	// EnvQueued lists requests read but not yet given to the machine, as
	// ID:FD:COMMAND or ID:FD:COMMAND:HEX entries (HEX: the argument)
	// joined by commas, e.g. "6:11:status".
	EnvQueued = "MWORKER_CONTROL_QUEUED"
	// EnvAccepted lists the clients accepted whose request line was not
	// read in full, as FD or FD:HEX entries (HEX: the bytes read so far)
	// joined by commas, e.g. "12,13:72656c".
	EnvAccepted = "MWORKER_CONTROL_ACCEPTED"
	// EnvNextID is the last request ID given out, so that the new image
	// never reuses one the machine may still answer.
	EnvNextID = "MWORKER_CONTROL_LAST_ID"
)

// EnvNames are every variable this package puts in the environment.
var EnvNames = []string{EnvListenerFD, EnvPending, EnvQueued, EnvAccepted, EnvNextID}

// Handoff is the control socket's part of a re-exec: the variables to add
// to the new image's environment, and the fds made inheritable for it.
type Handoff struct {
	// Env is KEY=VALUE entries for execve's environment.
	Env []string
	fds []int
}

// PrepareExec makes the listener and the clients' connections survive
// execve (it clears their close-on-exec flag) and names them in
// Handoff.Env. Call it just before execve, after Pause, with pending: the
// clients of the requests in fsm.Handover.Requests, and queued: the
// requests read that the machine has not seen (drain the channel first,
// and add Held; the new image's Queued returns them, same IDs). The
// clients Pause interrupted before their request was read go too: the new
// image reads them. Any other client is closed by the exec. If execve
// fails, call Undo.
func (l *Listener) PrepareExec(pending map[fsm.RequestID]*Conn, queued []Request) (*Handoff, error) {
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
	var triples []string
	for _, r := range queued {
		fd, err := rawFD(r.Conn.c)
		if err != nil {
			return nil, err
		}
		fds = append(fds, fd)
		triples = append(triples, queuedEntry(r, fd))
	}
	l.pmu.Lock()
	unread := slices.Clone(l.unread)
	l.pmu.Unlock()
	var accepted []string
	for _, u := range unread {
		fd, err := rawFD(u.conn.c)
		if err != nil {
			return nil, err
		}
		fds = append(fds, fd)
		e := strconv.Itoa(fd)
		if len(u.prefix) > 0 {
			e += ":" + hex.EncodeToString(u.prefix)
		}
		accepted = append(accepted, e)
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
		EnvQueued + "=" + strings.Join(triples, ","),
		EnvAccepted + "=" + strings.Join(accepted, ","),
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
// (EnvListenerFD is set), it takes over the inherited listener, returns
// the clients still waiting for their reload's outcome, by request ID,
// keeps the queued requests for Queued, and has Serve read the requests
// of the clients accepted but not read before any new one. Either way it
// unsets EnvNames in this process.
func Open(path string) (*Listener, map[fsm.RequestID]*Conn, error) {
	lv, inherited := os.LookupEnv(EnvListenerFD)
	pv, qv, nv := os.Getenv(EnvPending), os.Getenv(EnvQueued), os.Getenv(EnvNextID)
	av := os.Getenv(EnvAccepted)
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
	l.queued, err = importQueued(qv)
	if err == nil {
		l.unread, err = importAccepted(av)
	}
	if err != nil {
		l.ln.Close()
		for _, c := range pending {
			c.Close()
		}
		for _, r := range l.queued {
			r.Conn.Close()
		}
		return nil, nil, err
	}
	for id := range pending {
		l.nextID.Store(max(l.nextID.Load(), uint64(id)))
	}
	for _, r := range l.queued {
		l.nextID.Store(max(l.nextID.Load(), uint64(r.ID)))
	}
	return l, pending, nil
}

// Queued returns, once, the requests the previous image had read but not
// given to its machine. The event loop feeds them right after Start,
// before anything else: an image that re-executes again before it reads
// its channel (a storm of reloads) must not leave them waiting.
func (l *Listener) Queued() []Request {
	q := l.queued
	l.queued = nil
	return q
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
	// listen(2) again sets the backlog of a listening socket: a socket
	// bound by an older mworker, with a short queue, gets this one's.
	if err := unix.Listen(fd, listenBacklog()); err != nil {
		return nil, fmt.Errorf("control: listen on the inherited control socket %s: %w", path, err)
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
	reqs, err := importRequests(EnvPending, v, false)
	if err != nil {
		return nil, err
	}
	pending := make(map[fsm.RequestID]*Conn, len(reqs))
	for _, r := range reqs {
		pending[r.ID] = r.Conn
	}
	return pending, nil
}

func importQueued(v string) ([]Request, error) {
	return importRequests(EnvQueued, v, true)
}

// importRequests takes over the client fds of ID:FD (or ID:FD:COMMAND
// and ID:FD:COMMAND:HEX) entries; on error it closes every one it took.
func importRequests(name, v string, withCommand bool) ([]Request, error) {
	if v == "" {
		return nil, nil
	}
	var reqs []Request
	var errs []error
	for entry := range strings.SplitSeq(v, ",") {
		fields := strings.Split(entry, ":")
		var cmd fsm.Command
		var arg []byte
		ok := len(fields) == 2 && !withCommand
		if withCommand && (len(fields) == 3 || len(fields) == 4) {
			cmd, ok = fsm.ParseCommand(fields[2])
			if len(fields) == 4 {
				var err error
				arg, err = hex.DecodeString(fields[3])
				ok = ok && err == nil && len(arg) > 0
			}
		}
		id, err := strconv.ParseUint(fields[0], 10, 64)
		if !ok || err != nil || id == 0 {
			errs = append(errs, fmt.Errorf("control: bad entry %q in %s=%q", entry, name, v))
			continue
		}
		fd, err := parseFD(name, fields[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := importConn(fd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		reqs = append(reqs, Request{ID: fsm.RequestID(id), Command: cmd, Conn: c, Arg: string(arg)})
	}
	if len(errs) > 0 {
		for _, r := range reqs {
			r.Conn.Close()
		}
		return nil, errors.Join(errs...)
	}
	return reqs, nil
}

// importAccepted takes over the clients of FD or FD:HEX entries; on error
// it closes every one it took.
func importAccepted(v string) ([]unread, error) {
	if v == "" {
		return nil, nil
	}
	var us []unread
	var errs []error
	for entry := range strings.SplitSeq(v, ",") {
		fv, hv, _ := strings.Cut(entry, ":")
		prefix, err := hex.DecodeString(hv)
		if err != nil || len(prefix) >= MaxRequest {
			errs = append(errs, fmt.Errorf("control: bad entry %q in %s", entry, EnvAccepted))
			continue
		}
		fd, err := parseFD(EnvAccepted, fv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c, err := importConn(fd)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		us = append(us, unread{conn: c, prefix: prefix})
	}
	if len(errs) > 0 {
		for _, u := range us {
			u.conn.Close()
		}
		return nil, errors.Join(errs...)
	}
	return us, nil
}

func importConn(fd int) (*Conn, error) {
	f := os.NewFile(uintptr(fd), "control client")
	c, err := net.FileConn(f) // dups fd, close-on-exec
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("control: inherited client fd %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("control: inherited client fd %d is not a unix socket", fd)
	}
	return &Conn{c: uc}, nil
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

// queuedEntry is r's entry in EnvQueued, r's client being fd. The
// argument, if any, is in hex: it may hold any byte but a newline.
func queuedEntry(r Request, fd int) string {
	e := strconv.FormatUint(uint64(r.ID), 10) + ":" + strconv.Itoa(fd) + ":" + r.Command.String()
	if r.Arg != "" {
		e += ":" + hex.EncodeToString([]byte(r.Arg))
	}
	return e
}
