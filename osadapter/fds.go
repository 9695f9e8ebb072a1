package osadapter

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// fdRegistry is the one owner of the descriptors the master holds for its
// whole life and passes on: the listening sockets (--listen, socket
// activation, or those the previous image handed over), which every
// worker gets as fds 3.. and every re-exec hands to the next image.
//
// It holds each descriptor's *os.File, not only its number. The loop
// uses the descriptors by number (in a worker's ProcAttr.Files, in
// fcntl before an execve), and a number does not keep a file alive: an
// *os.File that nothing references any more is closed by its finalizer
// at the next garbage collection, and the number is then reused by the
// next socket the master opens (a control client, a notify socket). The
// registry is a field of the loop, so its files stay reachable for as
// long as the master runs; it closes them only at the master's exit.
//
// Each entry also keeps the device and inode the descriptor had when it
// was registered. Before the descriptors are passed to a worker or to
// the next image, one fstat(2) each compares them: a descriptor that was
// closed under the master, or whose number now names another file, is
// never passed on.
//
// The other descriptors that outlive a re-exec have owners of their own,
// each reachable from the loop: the control socket and the clients
// waiting for a reload's outcome (controlSocket: a net.UnixListener and
// net.UnixConns), and the workers' notify sockets (readySockets, with the
// duplicates made for an execve held by its undo until the execve).
type fdRegistry struct {
	// fstat is the OS's (OS.Fstat).
	fstat func(fd int, st *unix.Stat_t) error
	// listeners are passed to every worker as fds 3.., in this order.
	listeners []*ownedFd
}

// ownedFd is one registered descriptor.
type ownedFd struct {
	key  string   // unique, for logs and errors: "listener 0 web"
	name string   // the worker's name for it (LISTEN_FDNAMES)
	addr string   // its address as a URL (tcp://HOST:PORT), for status
	file *os.File // owns fd; nil only in tests of the loop on a fake OS
	fd   int
	// dev and ino identify the open file fd named at registration.
	dev, ino uint64
	// closed is set once the stop closed it (closeListeners).
	closed bool
}

// errFdReplaced wraps every failure of verify.
var errFdReplaced = errors.New("the descriptor is no longer the socket it was")

// addListener takes ownership of f, a listening socket, as the next
// worker fd (3 for the first). The caller must neither close f nor use it
// again.
func (r *fdRegistry) addListener(name string, f *os.File) (*ownedFd, error) {
	i := len(r.listeners)
	// f is not in the runtime poller (package listen keeps listeners out
	// of it), so Fd leaves its blocking mode alone.
	o := &ownedFd{key: "listener " + strconv.Itoa(i) + " " + name, name: name, file: f, fd: int(f.Fd())}
	if err := r.record(o); err != nil {
		return nil, err
	}
	r.listeners = append(r.listeners, o)
	return o, nil
}

// record reads o's identity.
func (r *fdRegistry) record(o *ownedFd) error {
	var st unix.Stat_t
	if err := r.fstat(o.fd, &st); err != nil {
		return errorf("%s (fd %d): fstat: %w", o.key, o.fd, err)
	}
	o.dev, o.ino = st.Dev, st.Ino
	return nil
}

// verify checks that o's descriptor is still open on the file it was
// registered with.
func (r *fdRegistry) verify(o *ownedFd) error {
	if o.closed {
		return fmt.Errorf("%s at fd %d: closed: the master is stopping", o.key, o.fd)
	}
	var st unix.Stat_t
	if err := r.fstat(o.fd, &st); err != nil {
		return fmt.Errorf("%s at fd %d: %w: it was closed under the master (fstat: %w); restart mworker", o.key, o.fd, errFdReplaced, err)
	}
	if st.Dev != o.dev || st.Ino != o.ino {
		return fmt.Errorf("%s at fd %d: %w: the number now names device %d inode %d, not device %d inode %d; restart mworker",
			o.key, o.fd, errFdReplaced, st.Dev, st.Ino, o.dev, o.ino)
	}
	return nil
}

// verifyAll verifies every registered descriptor; it stops at the first
// that fails, and returns it with the reason.
func (r *fdRegistry) verifyAll() (*ownedFd, error) {
	for _, o := range r.listeners {
		if err := r.verify(o); err != nil {
			return o, err
		}
	}
	return nil, nil
}

// workerFds are the listeners' descriptors in the order a worker gets
// them as fds 3.., after checking each (one fstat per listener).
func (r *fdRegistry) workerFds() ([]int, *ownedFd, error) {
	if bad, err := r.verifyAll(); err != nil {
		return nil, bad, err
	}
	fds := make([]int, len(r.listeners))
	for i, o := range r.listeners {
		fds[i] = o.fd
	}
	return fds, nil, nil
}

// names are the listeners' names, for LISTEN_FDNAMES.
func (r *fdRegistry) names() []string {
	names := make([]string, len(r.listeners))
	for i, o := range r.listeners {
		names[i] = o.name
	}
	return names
}

// keepOnExec checks every descriptor and clears its close-on-exec flag
// with setCloexec, for the execve that follows; it returns the
// descriptors it cleared, to set again if the execve fails. On an error
// it has set back what it cleared.
func (r *fdRegistry) keepOnExec(setCloexec func(fd int, on bool) error) (cleared []int, bad *ownedFd, err error) {
	if bad, err := r.verifyAll(); err != nil {
		return nil, bad, err
	}
	for _, o := range r.listeners {
		if err := setCloexec(o.fd, false); err != nil {
			for _, fd := range cleared {
				setCloexec(fd, true)
			}
			return nil, o, errorf("keep fd %d (%s) open across exec: %w", o.fd, o.key, err)
		}
		cleared = append(cleared, o.fd)
	}
	return cleared, nil, nil
}

// closeListeners closes the master's own copy of every listening socket,
// when a stop begins. The workers keep theirs until they stop accepting;
// once the last of them has closed its copy, the kernel refuses a new
// connection at once (a TCP RST, ECONNREFUSED for a unix socket) rather
// than queue it in a backlog nobody will accept from and reset it when
// the master exits. A socket systemd passed (socket activation) stays
// open in systemd, which queues connections for the next start. Nothing
// is passed to a worker or an image afterwards: workerFds and keepOnExec
// fail on a closed listener.
func (r *fdRegistry) closeListeners() error {
	var errs []error
	for _, o := range r.listeners {
		if o.file != nil && !o.closed {
			errs = append(errs, o.file.Close())
		}
		o.closed = true
	}
	return errors.Join(errs...)
}

// closeAll closes every descriptor, at the master's exit (never across a
// re-exec).
func (r *fdRegistry) closeAll() error {
	var errs []error
	for _, o := range r.listeners {
		if o.file != nil && !o.closed {
			errs = append(errs, o.file.Close())
		}
	}
	r.listeners = nil
	return errors.Join(errs...)
}
