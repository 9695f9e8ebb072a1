package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/listen"
)

// Reasons a received datagram is rejected. Each wraps ErrRejected, the
// one a receive loop tests to log the datagram at debug and carry on.
var (
	ErrRejected   = errors.New("notify datagram rejected")
	ErrForeignUID = errors.New("sender runs as another uid")
	ErrNoCreds    = errors.New("no sender credentials")
	ErrCarriesFDs = errors.New("carries file descriptors")
)

// Datagram is one datagram received on a Socket.
type Datagram struct {
	// Payload is the datagram as sent (at most MaxSize bytes kept).
	Payload []byte
	// PID, UID and GID are the sender's, from SCM_CREDENTIALS; set on a
	// rejected datagram too when the kernel gave them.
	PID, UID, GID int
	// Message is the parsed payload, set only when the error is nil.
	Message Message
}

// Socket is the receiving end of one worker's NOTIFY_SOCKET: a unix
// datagram socket with SO_PASSCRED, so that every datagram comes with the
// sender's pid, uid and gid as the kernel knows them.
//
// The master makes one Socket per worker rather than one shared socket
// that maps the sender's pid to a worker. A worker is often a shell or a
// wrapper whose child is the real server, and that child sends READY=1
// with its own pid, which no table of worker pids holds (systemd needs
// cgroups to solve this). With a socket per worker the socket the
// datagram arrives on names the worker, whoever in its tree sent it; the
// credentials serve only to refuse other users. It also keeps workers
// apart: one that floods its socket delays no other worker's READY=1, and
// none can speak for another. The cost is one descriptor per worker.
type Socket struct {
	conn *net.UnixConn
	addr string
	// uid is the only sender uid accepted: the master's real uid, the one
	// the kernel reports for a sender.
	uid int
	// also is one more uid accepted (Accept), or -1.
	also int
	buf  []byte
	oob  []byte
}

// Listen makes a notify socket at addr: an absolute path (put it in a
// directory only the master's user may enter; MakeDir makes one) or an
// abstract name "@NAME". An abstract name needs no file, but any process
// in the network namespace can see it (/proc/net/unix) and bind the next
// one first, and clients that take NOTIFY_SOCKET only as a path cannot
// use it; the uid check refuses other users' datagrams either way. A path
// must not exist yet: an existing one gives an error wrapping EADDRINUSE.
func Listen(addr string) (*Socket, error) {
	if err := checkAddr(addr); err != nil {
		return nil, err
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("sdnotify: cannot listen on %s: %w", addr, err)
	}
	s, err := newSocket(conn, addr)
	if err != nil {
		conn.Close()
		if !strings.HasPrefix(addr, "@") {
			_ = os.Remove(addr)
		}
		return nil, err
	}
	return s, nil
}

// FromFile takes over a notify socket another image made (see File), for
// a master that re-exec'd itself while a worker had not reported ready
// yet. It duplicates f; the caller closes f.
func FromFile(f *os.File) (*Socket, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("sdnotify: fd %d: %w", f.Fd(), err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok || conn.LocalAddr() == nil || conn.LocalAddr().Network() != "unixgram" {
		c.Close()
		return nil, fmt.Errorf("sdnotify: fd %d is not a bound unix datagram socket", f.Fd())
	}
	s, err := newSocket(conn, conn.LocalAddr().String())
	if err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func newSocket(conn *net.UnixConn, addr string) (*Socket, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("sdnotify: %s: %w", addr, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		return nil, fmt.Errorf("sdnotify: %s: setsockopt(SO_PASSCRED): %w", addr, serr)
	}
	return &Socket{
		conn: conn,
		addr: addr,
		uid:  os.Getuid(),
		also: -1,
		buf:  make([]byte, MaxSize+1),
		// Room for the credentials and a few descriptors: descriptors that
		// do not fit are never installed (MSG_CTRUNC), the rest are closed.
		oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(16*4)),
	}, nil
}

// Accept accepts the datagrams of one more uid besides the master's own:
// the uid its workers run as when the master drops their privileges
// (mworker run --user). A negative uid accepts none.
func (s *Socket) Accept(uid int) { s.also = uid }

// Addr is the value for the worker's NOTIFY_SOCKET.
func (s *Socket) Addr() string { return s.addr }

// File returns a duplicate of the socket's descriptor, close-on-exec, to
// hand to the next image across a re-exec (listen.KeepOnExec). Unlike
// net's File methods it leaves the socket non-blocking when its Fd is
// called, so that Receive and Close still work if the exec fails.
func (s *Socket) File() (*os.File, error) {
	f, err := listen.Dup(s.conn)
	if err != nil {
		return nil, fmt.Errorf("sdnotify: %s: %w", s.addr, err)
	}
	return f, nil
}

// Close closes the socket and removes its file, if it has one. A Receive
// blocked on it returns an error wrapping net.ErrClosed.
func (s *Socket) Close() error {
	err := s.conn.Close()
	if !strings.HasPrefix(s.addr, "@") {
		if rerr := os.Remove(s.addr); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("sdnotify: close %s: %w", s.addr, err)
	}
	return nil
}

// Receive waits for the next datagram. A datagram that is too large,
// malformed, carries descriptors (closed at once; only "BARRIER=1" may
// carry one, see isBarrier), lacks credentials or comes from another uid
// gives an error wrapping ErrRejected, with the credentials in the
// Datagram when known: log it and call Receive again.
// Any other error (net.ErrClosed after Close) ends the socket's use.
// Receive is not safe for concurrent use on one Socket.
func (s *Socket) Receive() (Datagram, error) {
	n, oobn, flags, _, err := s.conn.ReadMsgUnix(s.buf, s.oob)
	if err != nil {
		return Datagram{}, fmt.Errorf("sdnotify: receive on %s: %w", s.addr, err)
	}
	d := Datagram{Payload: append([]byte(nil), s.buf[:min(n, MaxSize)]...), PID: -1, UID: -1, GID: -1}
	haveCreds, fds, cerr := readControl(s.oob[:oobn], &d)
	for _, fd := range fds {
		unix.Close(fd)
	}
	switch {
	case cerr != nil:
		return d, s.reject(d, fmt.Errorf("control message: %w", cerr))
	case !haveCreds:
		return d, s.reject(d, ErrNoCreds)
	case d.UID != s.uid && d.UID != s.also:
		return d, s.reject(d, fmt.Errorf("%w %d, not %d", ErrForeignUID, d.UID, s.uid))
	case flags&unix.MSG_TRUNC != 0 || n > MaxSize:
		return d, s.reject(d, ErrTooLarge)
	}
	m, err := Parse(d.Payload)
	if err != nil {
		return d, s.reject(d, err)
	}
	if (len(fds) > 0 || flags&unix.MSG_CTRUNC != 0) && !(isBarrier(m) && len(fds) == 1) {
		return d, s.reject(d, ErrCarriesFDs)
	}
	d.Message = m
	return d, nil
}

// isBarrier reports whether m is sd_notify_barrier(3)'s "BARRIER=1". It
// comes with one descriptor, the write end of a pipe, and the sender
// waits until the receiver has closed it: Receive closes it at once, so
// the barrier returns once every earlier datagram has been received.
func isBarrier(m Message) bool {
	return len(m.Fields) == 1 && m.Fields[0] == Field{Key: "BARRIER", Value: "1"}
}

func (s *Socket) reject(d Datagram, why error) error {
	return fmt.Errorf("sdnotify: %s: datagram from pid %d uid %d: %w: %w", s.addr, d.PID, d.UID, ErrRejected, why)
}

// readControl takes the credentials into d and returns every descriptor
// the datagram carried, for the caller to close.
func readControl(oob []byte, d *Datagram) (haveCreds bool, fds []int, err error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false, nil, err
	}
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			c, cerr := unix.ParseUnixCredentials(m)
			if cerr != nil {
				err = cerr
				continue
			}
			d.PID, d.UID, d.GID = int(c.Pid), int(c.Uid), int(c.Gid)
			haveCreds = true
		case unix.SCM_RIGHTS:
			rights, rerr := unix.ParseUnixRights(m)
			if rerr != nil {
				err = rerr
			}
			fds = append(fds, rights...)
		}
	}
	return haveCreds, fds, err
}

// MakeDir makes a private directory for notify sockets under parent, or
// under os.TempDir() when parent is "": named "mworker-<random>", mode
// 0700 whatever the umask, so that no other uid can enter it, and so
// neither reach a socket in it nor take the name of the next one. The
// caller removes it when the master exits for good (os.RemoveAll), not
// across a re-exec.
func MakeDir(parent string) (string, error) {
	dir, err := os.MkdirTemp(parent, "mworker-")
	if err == nil {
		// MkdirTemp asks for 0700 less the umask; a umask that takes the
		// owner's bits would leave a directory the master cannot use.
		if err = os.Chmod(dir, 0o700); err != nil {
			os.Remove(dir)
		}
	}
	if err != nil {
		return "", fmt.Errorf("sdnotify: cannot make a directory for notify sockets: %w", err)
	}
	return dir, nil
}

// MaxAddr is the longest address Listen and Send take: sun_path less the
// final NUL.
const MaxAddr = 107

// checkAddr accepts what NOTIFY_SOCKET may hold here: an absolute path or
// an abstract "@NAME", short enough for sockaddr_un.
func checkAddr(addr string) error {
	switch {
	case addr == "" || (addr[0] != '/' && addr[0] != '@') || addr == "@":
		return fmt.Errorf("sdnotify: notify socket address %q: use an absolute path or an abstract @NAME", addr)
	case len(addr) > MaxAddr:
		return fmt.Errorf("sdnotify: notify socket address %q is %d bytes long; the kernel allows %d, use a shorter directory", addr, len(addr), MaxAddr)
	case strings.IndexByte(addr, 0) >= 0:
		return fmt.Errorf("sdnotify: notify socket address %q holds a NUL byte", addr)
	}
	return nil
}
