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
	"strconv"
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
)

// listenBacklog is the listen queue asked of listen(2): as long as the
// system allows (net.core.somaxconn, which the kernel caps it to anyway).
// Clients wait there while the master re-executes, and a storm of reloads
// (systemctl reload in a loop, a deploy tool on many hosts) must find room:
// when the queue of a unix socket is full, connect(2) fails at once with
// EAGAIN. Linux before 4.1 kept the backlog in 16 bits.
func listenBacklog() int {
	n := unix.SOMAXCONN
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && v > 0 {
			n = v
		}
	}
	return min(n, 1<<16-1)
}

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
	queued   []Request // handed over by the previous image, for the event loop (Queued)
	done     chan struct{}
	once     sync.Once

	// Pause and Resume (pause.go).
	pmu      sync.Mutex
	paused   bool
	hold     chan struct{}  // closed by Pause: requests read from now on are held
	parked   chan struct{}  // closed by Serve once it has stopped accepting
	resumed  chan struct{}  // closed by Resume
	inflight int            // accepted clients not yet sent on, held or answered
	drained  chan struct{}  // closed when inflight drops to 0, if set
	reading  map[*Conn]bool // accepted clients whose request is being read
	held     []Request      // read while paused: the event loop takes them (Held)
	unread   []unread       // accepted, request not read when paused: handed over or read after Resume
}

// unread is a client whose request line Pause interrupted: the bytes of it
// read so far, and the connection the rest is still to be read from.
type unread struct {
	conn   *Conn
	prefix []byte
}

// Request is a valid control request, handed to the event loop.
type Request struct {
	ID      fsm.RequestID
	Command fsm.Command
	Conn    *Conn
	Arg     string // what follows the command on the request line, for fsm.ControlRequest.Arg
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
	if err := unix.Listen(fd, listenBacklog()); err != nil {
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
	return &Listener{path: path, ln: ln, uid: os.Geteuid(), done: make(chan struct{}),
		hold: make(chan struct{}), reading: make(map[*Conn]bool)}
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
//
// Clients that the previous image had accepted but not read (handed over
// across a re-exec, or interrupted by a Pause that Resume undid) are read
// first.
func (l *Listener) Serve(out chan<- Request) error {
	var pause time.Duration
	for {
		if !l.waitWhilePaused() {
			return nil
		}
		l.readUnread(out)
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
		l.start(unread{conn: &Conn{c: c}}, out)
	}
}

// start handles an accepted client on a goroutine of its own.
func (l *Listener) start(u unread, out chan<- Request) {
	l.pmu.Lock()
	l.inflight++
	l.pmu.Unlock()
	go func() {
		done := sync.OnceFunc(l.handled)
		defer done()
		l.handle(u.conn, u.prefix, out, done)
	}()
}

// readUnread starts handling the clients whose request a Pause interrupted
// (or the previous image handed over unread), unless paused again.
func (l *Listener) readUnread(out chan<- Request) {
	l.pmu.Lock()
	var us []unread
	if !l.paused {
		us, l.unread = l.unread, nil
	}
	l.pmu.Unlock()
	for _, u := range us {
		l.start(u, out)
	}
}

// handle reads the request of an accepted client, whose first bytes, if a
// Pause interrupted an earlier read, are prefix. It calls done before it
// answers a bad request itself, which may take a while (a client that does
// not read): a Pause need not wait for a request that will never reach the
// event loop. Any other way through is quick, so Pause waits for it.
func (l *Listener) handle(conn *Conn, prefix []byte, out chan<- Request, done func()) {
	uid, err := peerUID(conn.c)
	if err != nil {
		done()
		l.log(slog.LevelWarn, "control: cannot read peer credentials", "err", err)
		conn.answer(Answer{Error: "cannot read your credentials: " + err.Error()})
		return
	}
	if uid != l.uid {
		done()
		l.log(slog.LevelWarn, "control: refused a peer of another uid", "uid", uid)
		conn.write(Answer{Error: fmt.Sprintf("permission denied: your uid %d is not mworker's uid %d; connect as the user that runs mworker", uid, l.uid)})
		conn.drain()
		return
	}
	if !l.startReading(conn) {
		l.keepUnread(conn, prefix, out, done)
		return
	}
	line, partial, err := readRequest(conn.c, prefix)
	if l.stopReading(conn, err) {
		// Pause interrupted the read: the client is handed over with what
		// it has sent so far, or read on after Resume.
		l.keepUnread(conn, partial, out, done)
		return
	}
	if err != nil {
		done()
	}
	switch {
	case errors.Is(err, errTooLong):
		l.log(slog.LevelWarn, "control: oversized request")
		// Read what is left before closing: closing a unix socket with
		// unread input makes the client's read fail before our answer.
		conn.write(Answer{Error: fmt.Sprintf("request longer than %d bytes: send one line: %s", MaxRequest, fsm.CommandList("or"))})
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
	// The line is the command, then its argument if any ("scale 4"): the
	// machine judges whether the command takes one.
	word, arg, _ := strings.Cut(line, " ")
	cmd, ok := fsm.ParseCommand(word)
	if !ok {
		done()
		l.log(slog.LevelWarn, "control: unknown request", "request", clip(line))
		conn.answer(Answer{Error: fmt.Sprintf("unknown request %q: use %s", clip(line), fsm.CommandList("or"))})
		return
	}
	conn.c.SetReadDeadline(time.Time{})
	l.deliver(out, Request{ID: fsm.RequestID(l.nextID.Add(1)), Command: cmd, Conn: conn, Arg: strings.TrimSpace(arg)})
}

// deliver sends r on out or, once Pause has begun, holds it for the event
// loop to take with Held: a request must never wait on a full channel
// that the event loop, busy with a re-exec, does not read, and then slip
// into the channel after the loop drained it.
func (l *Listener) deliver(out chan<- Request, r Request) {
	for {
		l.pmu.Lock()
		if l.paused {
			l.held = append(l.held, r)
			l.pmu.Unlock()
			return
		}
		hold := l.hold
		l.pmu.Unlock()
		select {
		case out <- r:
			return
		case <-hold: // paused meanwhile
		case <-l.done:
			r.Conn.Close()
			return
		}
	}
}

func (l *Listener) log(level slog.Level, msg string, attrs ...any) {
	if l.Logger != nil {
		l.Logger.Log(context.Background(), level, msg, append(attrs, "path", l.path)...)
	}
}

// PeerPid is the pid of the client's process when it connected
// (SO_PEERCRED), or 0 if the kernel does not say.
func (c *Conn) PeerPid() int {
	cred, err := peerCred(c.c)
	if err != nil {
		return 0
	}
	return int(cred.Pid)
}

func peerUID(c *net.UnixConn) (int, error) {
	cred, err := peerCred(c)
	if err != nil {
		return 0, err
	}
	return int(cred.Uid), nil
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, serr
}

var (
	errTooLong = errors.New("control: request too long")
	errEmpty   = errors.New("control: empty request")
)

// readRequest reads one line of at most MaxRequest bytes, of which prefix
// was read before. A last line without a newline counts (echo -n reload |
// socat ...). On a read error it also returns what it has read.
func readRequest(r io.Reader, prefix []byte) (string, []byte, error) {
	buf := make([]byte, MaxRequest)
	n := copy(buf, prefix)
	for {
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return strings.TrimSpace(string(buf[:i])), nil, nil
		}
		if n == len(buf) {
			return "", nil, errTooLong
		}
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
				n = i
			}
			if s := strings.TrimSpace(string(buf[:n])); s != "" {
				return s, nil, nil
			}
			return "", nil, errEmpty
		}
		if err != nil {
			return "", buf[:n], err
		}
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
