package listen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// backlog asks for the largest accept queue; the kernel caps it at
// net.core.somaxconn. A reload briefly leaves connections queued while the
// new workers start, so the queue should be as long as allowed.
const backlog = 65535

// Listener is one listening socket held by the master.
type Listener struct {
	// Name is the worker-visible name (LISTEN_FDNAMES).
	Name string
	// Network is TCP or Unix for what Bind made. An inherited descriptor
	// may also be "udp", "unixgram" or "unixpacket", or "" for one that is
	// no inet or unix socket (systemd may pass FIFOs and other files).
	Network string
	// Address is the bound address: HOST:PORT with the port the kernel
	// chose for port 0, or the socket file's path.
	Address string
	// File holds the descriptor, close-on-exec and in blocking mode as
	// systemd passes sockets (unless it was inherited non-blocking).
	File *os.File
}

// URL is the address as tcp://HOST:PORT or unix:///PATH.
func (l Listener) URL() string {
	if l.Network == "" {
		return "fd://" + strconv.Itoa(int(l.File.Fd()))
	}
	return l.Network + "://" + l.Address
}

// Names lists the listeners' names in order.
func Names(ls []Listener) []string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Name
	}
	return names
}

// Close closes every listener's descriptor. It leaves unix socket files in
// place: the next Bind finds them stale and removes them.
func Close(ls []Listener) error {
	var errs []error
	for _, l := range ls {
		if l.File != nil {
			errs = append(errs, l.File.Close())
		}
	}
	return errors.Join(errs...)
}

// SetNonblocking sets O_NONBLOCK on every listener, as systemd's
// NonBlocking=yes does. The flag belongs to the open file description,
// which the master and every worker share: a worker sees it as set, and a
// server that sets or clears it itself does so for all. Bound sockets are
// blocking, as systemd passes them by default; a server that expects
// non-blocking inherited sockets and does not set the flag (nginx, which
// inherits them from an nginx that did) otherwise blocks in accept4 when
// another process took the connection it was woken for, and serves none
// of its other connections until the next one arrives. The files stay out
// of the runtime's poller.
func SetNonblocking(ls []Listener) error {
	for _, l := range ls {
		rc, err := l.File.SyscallConn()
		if err != nil {
			return fmt.Errorf("listen: %s: %w", l.URL(), err)
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), true) }); err != nil {
			return fmt.Errorf("listen: %s: %w", l.URL(), err)
		}
		if serr != nil {
			return fmt.Errorf("listen: %s: set O_NONBLOCK: %w", l.URL(), serr)
		}
	}
	return nil
}

// Bind binds and listens on every spec, in order. TCP sockets get
// SO_REUSEADDR; an empty host (":8080") takes every IPv6 and IPv4 address
// whatever net.ipv6.bindv6only says, while "[::]:8080" follows it; a host
// name is resolved once, to its first IPv4 address if it has one. On error it closes what
// it had bound, removes the socket files it had created, and returns one
// line naming the address, the reason and the fix, wrapping the errno
// (errors.Is(err, unix.EADDRINUSE) and so on).
func Bind(specs []Spec) ([]Listener, error) {
	ls := make([]Listener, 0, len(specs))
	var created []string
	for _, s := range specs {
		var l Listener
		var err error
		switch s.Network {
		case TCP:
			l, err = bindTCP(s)
		case Unix:
			l, err = bindUnix(s)
			if err == nil {
				created = append(created, l.Address)
			}
		default:
			err = fmt.Errorf("listen: %q: %w: unknown network %q", s.String(), ErrBadSpec, s.Network)
		}
		if err != nil {
			_ = Close(ls)
			for _, p := range created {
				_ = os.Remove(p)
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

func bindTCP(s Spec) (Listener, error) {
	sa, family, dualStack, err := resolveTCP(s.Address)
	if err != nil {
		return Listener{}, fmt.Errorf("listen: cannot bind %s: %w", s.URL(), err)
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if errors.Is(err, unix.EAFNOSUPPORT) && dualStack {
		// No IPv6 on this host: ":PORT" means every IPv4 address.
		sa, family, dualStack = &unix.SockaddrInet4{Port: sa.(*unix.SockaddrInet6).Port}, unix.AF_INET, false
		fd, err = unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return Listener{}, bindError(s, os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return Listener{}, bindError(s, os.NewSyscallError("setsockopt", err))
	}
	if dualStack {
		// ":PORT" takes IPv4 and IPv6 whatever net.ipv6.bindv6only says.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			unix.Close(fd)
			return Listener{}, bindError(s, os.NewSyscallError("setsockopt", err))
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return Listener{}, bindError(s, err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return Listener{}, bindError(s, err)
	}
	return newListener(s.Name, fd)
}

// resolveTCP turns HOST:PORT into a socket address. An empty host means
// every address, IPv6 and IPv4 (dualStack). A host name is resolved and,
// as net.Listen does, its first IPv4 address is preferred.
func resolveTCP(address string) (sa unix.Sockaddr, family int, dualStack bool, err error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, 0, false, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, 0, false, err
	}
	if host == "" {
		return &unix.SockaddrInet6{Port: port}, unix.AF_INET6, true, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if lerr != nil || len(ips) == 0 {
			return nil, 0, false, fmt.Errorf("cannot resolve host %q: use an IP address or a name this machine resolves", host)
		}
		ip = ips[0]
		for _, a := range ips {
			if a.Unmap().Is4() {
				ip = a
				break
			}
		}
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return &unix.SockaddrInet4{Port: port, Addr: ip.As4()}, unix.AF_INET, false, nil
	}
	sa6 := &unix.SockaddrInet6{Port: port, Addr: ip.As16()}
	if zone := ip.Zone(); zone != "" {
		ifi, err := net.InterfaceByName(zone)
		if err != nil {
			return nil, 0, false, fmt.Errorf("unknown interface %q in %s", zone, host)
		}
		sa6.ZoneId = uint32(ifi.Index)
	}
	return sa6, unix.AF_INET6, false, nil
}

func bindUnix(s Spec) (Listener, error) {
	if err := removeStale(s); err != nil {
		return Listener{}, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return Listener{}, bindError(s, os.NewSyscallError("socket", err))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: s.Address}); err != nil {
		unix.Close(fd)
		return Listener{}, bindError(s, err)
	}
	// The mode is set before listen(2): until then a connect is refused,
	// so the umask-derived mode bind(2) gave the file never lets anyone in.
	if err := os.Chmod(s.Address, os.FileMode(s.Mode)); err != nil {
		unix.Close(fd)
		_ = os.Remove(s.Address)
		return Listener{}, fmt.Errorf("listen: cannot bind %s: %w", s.URL(), err)
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		_ = os.Remove(s.Address)
		return Listener{}, bindError(s, err)
	}
	return newListener(s.Name, fd)
}

// removeStale removes a socket file left by a process that is gone. A file
// that is not a socket, or a socket something still answers on, is left
// alone and reported.
func removeStale(s Spec) error {
	fi, err := os.Lstat(s.Address)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen: cannot bind %s: %w", s.URL(), err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("listen: cannot bind %s: %w: the path exists and is not a socket; remove it or choose another path", s.URL(), unix.EADDRINUSE)
	}
	// A non-blocking connect to a unix socket ends at once: refused when
	// nobody listens, EAGAIN when a listener's queue is full.
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("listen: cannot bind %s: %w", s.URL(), os.NewSyscallError("socket", err))
	}
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: s.Address})
	unix.Close(probe)
	switch {
	case errors.Is(err, unix.ECONNREFUSED):
		if err := os.Remove(s.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("listen: cannot remove stale socket %s: %w", s.Address, err)
		}
		return nil
	case errors.Is(err, unix.ENOENT):
		return nil // gone meanwhile
	case err == nil, errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EPROTOTYPE):
		return fmt.Errorf("listen: cannot bind %s: %w: a process is listening on it; stop it or choose another path", s.URL(), unix.EADDRINUSE)
	default:
		return fmt.Errorf("listen: cannot bind %s: cannot tell whether the existing socket is in use: %w", s.URL(), err)
	}
}

// bindError turns the errno of bind(2) or listen(2) into one line that
// says how to fix it.
func bindError(s Spec, err error) error {
	var hint string
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		hint = "another process listens there; stop it or choose another address"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		if s.Network == TCP {
			hint = "use a port >= 1024, run as root or grant CAP_NET_BIND_SERVICE"
		} else {
			hint = "check that this user may write to the directory"
		}
	case errors.Is(err, unix.EADDRNOTAVAIL):
		hint = "the host is not an address of this machine; use one it has, or leave HOST empty for all"
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		hint = "the directory does not exist; create it first"
	}
	where := s.Address
	if s.Network == Unix {
		where = s.URL()
	}
	if hint == "" {
		return fmt.Errorf("listen: cannot bind %s: %w", where, err)
	}
	return fmt.Errorf("listen: cannot bind %s: %w: %s", where, err, hint)
}

// newListener wraps a listening socket, describing it by getsockname(2).
func newListener(name string, fd int) (Listener, error) {
	network, address, err := describe(fd)
	if err != nil {
		unix.Close(fd)
		return Listener{}, fmt.Errorf("listen: getsockname: %w", err)
	}
	return Listener{Name: name, Network: network, Address: address, File: os.NewFile(uintptr(fd), network+"://"+address)}, nil
}

// describe names the address a descriptor is bound to: ("tcp", HOST:PORT),
// ("unix", PATH), ("udp", ...) and so on; ("", "") for a descriptor that is
// not an inet or unix socket.
func describe(fd int) (network, address string, err error) {
	sa, err := unix.Getsockname(fd)
	if errors.Is(err, unix.ENOTSOCK) {
		return "", "", nil
	}
	if err != nil {
		return "", "", err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return "", "", err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		address = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
		network = inetNetworks[typ]
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				ip = ip.WithZone(ifi.Name)
			}
		}
		address = netip.AddrPortFrom(ip, uint16(a.Port)).String()
		network = inetNetworks[typ]
	case *unix.SockaddrUnix:
		address = a.Name
		network = unixNetworks[typ]
	}
	if network == "" {
		return "", "", nil
	}
	return network, address, nil
}

// Socket types by the names package net gives them; a socket of another
// kind (raw, netlink...) is described as "".
var (
	inetNetworks = map[int]string{unix.SOCK_STREAM: TCP, unix.SOCK_DGRAM: "udp"}
	unixNetworks = map[int]string{unix.SOCK_STREAM: Unix, unix.SOCK_DGRAM: "unixgram", unix.SOCK_SEQPACKET: "unixpacket"}
)
