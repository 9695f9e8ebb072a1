package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// MaxRequest is the longest request the server reads, newline included.
// Longer requests are answered with an error.
const MaxRequest = 4096

// maxPath is the room in sockaddr_un.sun_path, less the final NUL.
const maxPath = 107

const (
	// requestTimeout bounds how long a client may take to send its line,
	// so that a silent client holds no goroutine for long.
	requestTimeout = 5 * time.Second
	// writeTimeout bounds an answer: the event loop calls Respond and must
	// not hang on a client that never reads.
	writeTimeout = 2 * time.Second
	// backlog is the listen queue; clients are rare and short-lived.
	backlog = 64
)

// Listener is the master's control socket.
type Listener struct {
	// Logger receives refused connections and bad requests at debug or
	// warn level; nil discards them. Set it before Serve.
	Logger *slog.Logger

	path     string
	ln       *net.UnixListener
	uid      int    // the only peer uid served: the master's euid
	dev, ino uint64 // of the socket file, to remove only our own on Close
	nextID   atomic.Uint64
	queued   []Request // handed over by the previous image; Serve sends them first
	done     chan struct{}
	once     sync.Once

	// Pause and Resume (pause.go).
	pmu      sync.Mutex
	paused   bool
	parked   chan struct{} // closed by Serve once it has stopped accepting
	resumed  chan struct{} // closed by Resume
	inflight int           // accepted clients not yet sent on or answered
	drained  chan struct{} // closed when inflight drops to 0, if set
}

// Request is a valid control request, handed to the event loop.
type Request struct {
	ID      fsm.RequestID
	Command fsm.Command
	Conn    *Conn
}

// Conn is a client waiting for its answer. The event loop owns it once it
// arrives in a Request: it answers with Respond, or closes it.
type Conn struct{ c *net.UnixConn }

// Close drops the client without an answer.
func (c *Conn) Close() error { return c.c.Close() }

// Listen creates the control socket at path, mode 0600. A socket file left
// by a master that is gone is removed; a path where something still
// listens, or that is not a socket, is an error.
func Listen(path string) (*Listener, error) {
	if path == "" {
		return nil, errors.New("control: empty --control path: give a file path such as /run/mworker.sock")
	}
	if len(path) > maxPath {
		return nil, fmt.Errorf("control: --control path %q is %d bytes, longer than the %d a unix socket allows: use a shorter path", path, len(path), maxPath)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("control: socket: %w", err)
	}
	// bind(2) gives the new file the socket inode's mode less the umask:
	// set that mode first so the file is never open to others, not even
	// between bind and chmod.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control: fchmod socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control: cannot bind %s: %w: check the directory exists and is writable, or choose another --control path", path, err)
	}
	fail := func(err error) (*Listener, error) {
		unix.Close(fd)
		os.Remove(path)
		return nil, err
	}
	// A umask that removes the owner's bits would lock the owner out too.
	if err := os.Chmod(path, 0o600); err != nil {
		return fail(fmt.Errorf("control: chmod %s: %w", path, err))
	}
	if err := unix.Listen(fd, backlog); err != nil {
		return fail(fmt.Errorf("control: listen on %s: %w", path, err))
	}
	f := os.NewFile(uintptr(fd), path)
	ln, err := net.FileListener(f) // dups fd
	f.Close()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("control: %s: %w", path, err)
	}
	l := newListener(path, ln.(*net.UnixListener))
	if err := l.statPath(); err != nil {
		l.ln.Close()
		os.Remove(path)
		return nil, err
	}
	return l, nil
}

func newListener(path string, ln *net.UnixListener) *Listener {
	return &Listener{path: path, ln: ln, uid: os.Geteuid(), done: make(chan struct{})}
}

func (l *Listener) statPath() error {
	var st unix.Stat_t
	if err := unix.Stat(l.path, &st); err != nil {
		return fmt.Errorf("control: stat %s: %w", l.path, err)
	}
	l.dev, l.ino = st.Dev, st.Ino
	return nil
}

// removeStale removes a socket file at path that nothing listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: cannot check %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("control: %s exists and is not a socket: remove it or choose another --control path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("control: %s is in use: another mworker (or another program) listens there; stop it or choose another --control path", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: cannot tell whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("control: cannot remove stale socket %s: %w", path, err)
	}
	return nil
}

// Path is the socket's path as given to Listen.
func (l *Listener) Path() string { return l.path }

// Close stops Serve, drops clients that have not reached the event loop,
// and removes the socket file if it is still the one this master created.
// It is for the master's exit, never for a re-exec.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.ln.Close()
		var st unix.Stat_t
		if unix.Stat(l.path, &st) == nil && st.Dev == l.dev && st.Ino == l.ino {
			os.Remove(l.path)
		}
	})
	return err
}

// Serve accepts clients until Close, and sends each valid request to out.
// It answers by itself: peers of another uid, bad and oversized requests.
// It returns nil after Close, or the error that stopped it accepting.
func (l *Listener) Serve(out chan<- Request) error {
	queued := l.queued
	l.queued = nil
	for i, r := range queued {
		select {
		case out <- r:
		case <-l.done:
			for _, r := range queued[i:] {
				r.Conn.Close()
			}
			return nil
		}
	}
	var pause time.Duration
	for {
		if !l.waitWhilePaused() {
			return nil
		}
		c, err := l.ln.AcceptUnix()
		if err != nil {
			select {
			case <-l.done:
				return nil
			default:
			}
			if l.isPaused() {
				continue // Pause interrupted the accept
			}
			// Out of fds, or a client that gave up in the queue: the
			// master carries on, a little later.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
				errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.ENOBUFS) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				l.log(slog.LevelWarn, "control: accept failed; retrying", "err", err, "after", pause)
				select {
				case <-time.After(pause):
				case <-l.done:
					return nil
				}
				continue
			}
			return fmt.Errorf("control: accept on %s: %w", l.path, err)
		}
		pause = 0
		l.pmu.Lock()
		l.inflight++
		l.pmu.Unlock()
		go func() {
			defer l.handled()
			l.handle(&Conn{c: c}, out)
		}()
	}
}

func (l *Listener) handle(conn *Conn, out chan<- Request) {
	uid, err := peerUID(conn.c)
	if err != nil {
		l.log(slog.LevelWarn, "control: cannot read peer credentials", "err", err)
		conn.answer(Answer{Error: "cannot read your credentials: " + err.Error()})
		return
	}
	if uid != l.uid {
		l.log(slog.LevelWarn, "control: refused a peer of another uid", "uid", uid)
		conn.write(Answer{Error: fmt.Sprintf("permission denied: your uid %d is not mworker's uid %d; connect as the user that runs mworker", uid, l.uid)})
		conn.drain()
		return
	}
	conn.c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, err := readRequest(conn.c)
	switch {
	case errors.Is(err, errTooLong):
		l.log(slog.LevelWarn, "control: oversized request")
		// Read what is left before closing: closing a unix socket with
		// unread input makes the client's read fail before our answer.
		conn.write(Answer{Error: fmt.Sprintf("request longer than %d bytes: send one line: reload, status or stop", MaxRequest)})
		conn.drain()
		return
	case errors.Is(err, errEmpty):
		// A liveness probe (Listen's stale check does this): nothing to say.
		conn.Close()
		return
	case err != nil:
		l.log(slog.LevelDebug, "control: cannot read request", "err", err)
		conn.answer(Answer{Error: "cannot read request: " + err.Error()})
		return
	}
	cmd, ok := fsm.ParseCommand(line)
	if !ok {
		l.log(slog.LevelWarn, "control: unknown request", "request", clip(line))
		conn.answer(Answer{Error: fmt.Sprintf("unknown request %q: use reload, status or stop", clip(line))})
		return
	}
	conn.c.SetReadDeadline(time.Time{})
	req := Request{ID: fsm.RequestID(l.nextID.Add(1)), Command: cmd, Conn: conn}
	select {
	case out <- req:
	case <-l.done:
		conn.Close()
	}
}

func (l *Listener) log(level slog.Level, msg string, attrs ...any) {
	if l.Logger != nil {
		l.Logger.Log(context.Background(), level, msg, append(attrs, "path", l.path)...)
	}
}

func peerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return int(cred.Uid), nil
}

var (
	errTooLong = errors.New("control: request too long")
	errEmpty   = errors.New("control: empty request")
)

// readRequest reads one line of at most MaxRequest bytes. A last line
// without a newline counts (echo -n reload | socat ...).
func readRequest(r io.Reader) (string, error) {
	buf := make([]byte, MaxRequest)
	n := 0
	for {
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return strings.TrimSpace(string(buf[:i])), nil
		}
		if n == len(buf) {
			return "", errTooLong
		}
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
				n = i
			}
			if s := strings.TrimSpace(string(buf[:n])); s != "" {
				return s, nil
			}
			return "", errEmpty
		}
		if err != nil {
			return "", err
		}
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
