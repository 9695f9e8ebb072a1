package listen

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Network names used in Spec and Listener.
const (
	TCP  = "tcp"
	Unix = "unix"
)

// forms is appended to every parse error so that the operator sees what
// would have been accepted.
const forms = "use [NAME=]tcp://HOST:PORT, [NAME=]HOST:PORT or [NAME=]unix:///PATH"

// maxUnixPath is the room in sockaddr_un.sun_path, less the final NUL.
const maxUnixPath = 107

// ErrBadSpec is wrapped by every error ParseSpec returns.
var ErrBadSpec = errors.New("bad --listen value")

// Spec is one parsed --listen value.
type Spec struct {
	// Name is what the worker finds in LISTEN_FDNAMES. It defaults to
	// DefaultName(Address).
	Name string
	// Network is TCP or Unix.
	Network string
	// Address is HOST:PORT for TCP (HOST may be empty: every address) or
	// an absolute path for Unix.
	Address string
	// Mode is the permission of a unix socket file; ParseSpec sets
	// DefaultUnixMode. Ignored for TCP.
	Mode uint32
}

// DefaultUnixMode is the mode a unix socket file gets, as systemd's
// SocketMode= and nginx do: anyone who can reach the directory may
// connect. Restrict access with the directory's permissions, or set
// Spec.Mode before Bind.
const DefaultUnixMode = 0o666

// String gives the spec back in a canonical form that ParseSpec reads as
// the same Spec: the URL, prefixed with NAME= unless the name is the
// default one.
func (s Spec) String() string {
	if s.Name == DefaultName(s.Address) {
		return s.URL()
	}
	return s.Name + "=" + s.URL()
}

// URL is the address in the form tcp://HOST:PORT or unix:///PATH.
func (s Spec) URL() string {
	return s.Network + "://" + s.Address
}

// ParseSpec parses one --listen value: [NAME=]ADDR where ADDR is
// tcp://HOST:PORT, HOST:PORT (":8080", "[::1]:80" included) or
// unix:///PATH. A NAME may not contain ':' (the separator of
// LISTEN_FDNAMES), '/', '=' or anything but printable ASCII.
func ParseSpec(value string) (Spec, error) {
	name, addr, named := splitName(value)
	if named {
		if err := checkName(name); err != nil {
			return Spec{}, fmt.Errorf("listen: %q: %w: %w", value, ErrBadSpec, err)
		}
	}
	s, err := parseAddr(addr)
	if err != nil {
		return Spec{}, fmt.Errorf("listen: %q: %w: %s; %s", value, ErrBadSpec, err, forms)
	}
	if !named {
		name = DefaultName(s.Address)
	}
	s.Name = name
	return s, nil
}

// ParseSpecs parses every value and refuses the same address given twice
// (a second bind could only fail). Port 0 (the kernel picks a free port)
// may repeat.
func ParseSpecs(values []string) ([]Spec, error) {
	specs := make([]Spec, 0, len(values))
	seen := make(map[string]string, len(values))
	for _, v := range values {
		s, err := ParseSpec(v)
		if err != nil {
			return nil, err
		}
		if s.Network == TCP && strings.HasSuffix(s.Address, ":0") {
			specs = append(specs, s) // port 0: a new port each time
			continue
		}
		if first, ok := seen[s.URL()]; ok {
			return nil, fmt.Errorf("listen: %q: %w: %s is already given by %q; give each address once", v, ErrBadSpec, s.URL(), first)
		}
		seen[s.URL()] = v
		specs = append(specs, s)
	}
	return specs, nil
}

// DefaultName is the name of a listener given without NAME=: its address
// with every ':' (the separator of LISTEN_FDNAMES) and every byte that is
// not printable ASCII replaced by '_', cut at 255 bytes, as systemd's
// fdname rules want. It is stable across restarts and reorderings of the
// --listen options: "127.0.0.1:8080" is named "127.0.0.1_8080", ":8080"
// "_8080", "[::1]:80" "[__1]_80", and unix:///run/app.sock
// "/run/app.sock".
func DefaultName(address string) string {
	b := []byte(address)
	for i, c := range b {
		if c == ':' || c < ' ' || c > '~' {
			b[i] = '_'
		}
	}
	if len(b) > 255 {
		b = b[:255]
	}
	return string(b)
}

// splitName splits NAME=ADDR. The text before the first '=' is a name only
// if it holds no ':' and no '/', so that "unix:///tmp/a=b" stays an address.
func splitName(v string) (name, addr string, named bool) {
	i := strings.IndexByte(v, '=')
	if i < 0 || strings.ContainsAny(v[:i], ":/") {
		return "", v, false
	}
	return v[:i], v[i+1:], true
}

// checkName follows systemd's fdname_is_valid: 1..255 printable ASCII
// characters, no ':'. '=' and '/' are refused too, to keep NAME=ADDR
// unambiguous.
func checkName(name string) error {
	if name == "" {
		return errors.New("empty NAME before '='; give a name or drop the '='")
	}
	if len(name) > 255 {
		return fmt.Errorf("NAME is %d bytes long; use at most 255", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || c == ':' || c == '=' || c == '/' {
			return fmt.Errorf("NAME %q holds %q; use printable ASCII without spaces, ':', '=' or '/'", name, c)
		}
	}
	return nil
}

func parseAddr(addr string) (Spec, error) {
	switch {
	case strings.HasPrefix(addr, "unix://"):
		path := strings.TrimPrefix(addr, "unix://")
		if !strings.HasPrefix(path, "/") {
			return Spec{}, fmt.Errorf("unix path %q is not absolute (unix:///PATH has three slashes)", path)
		}
		if len(path) > maxUnixPath {
			return Spec{}, fmt.Errorf("unix path is %d bytes long; the kernel allows %d", len(path), maxUnixPath)
		}
		if strings.IndexByte(path, 0) >= 0 {
			return Spec{}, errors.New("unix path holds a NUL byte")
		}
		return Spec{Network: Unix, Address: path, Mode: DefaultUnixMode}, nil
	case strings.HasPrefix(addr, "tcp://"):
		addr = strings.TrimPrefix(addr, "tcp://")
	case strings.Contains(addr, "://"):
		return Spec{}, fmt.Errorf("unknown scheme in %q", addr)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return Spec{}, fmt.Errorf("not HOST:PORT (%v)", stripAddrErr(err))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return Spec{}, fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if strings.ContainsAny(host, "/ ") {
		return Spec{}, fmt.Errorf("host %q is not a host name or IP address", host)
	}
	return Spec{Network: TCP, Address: net.JoinHostPort(host, strconv.FormatUint(n, 10))}, nil
}

// stripAddrErr keeps the reason of a *net.AddrError without repeating the
// address, which the caller already quotes.
func stripAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}
