package listen

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mustSpecs(t *testing.T, values ...string) []Spec {
	t.Helper()
	specs, err := ParseSpecs(values)
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

func mustBind(t *testing.T, values ...string) []Listener {
	t.Helper()
	ls, err := Bind(mustSpecs(t, values...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Close(ls) })
	return ls
}

// serveOnce accepts one connection on a duplicate of l's socket and writes
// msg to it, the way a worker would.
func serveOnce(t *testing.T, l Listener, msg string) {
	t.Helper()
	nl, err := net.FileListener(l.File)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer nl.Close()
		c, err := nl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, msg)
	}()
}

func dialRead(t *testing.T, network, address string) string {
	t.Helper()
	c, err := net.DialTimeout(network, address, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func fdFlags(t *testing.T, f *os.File) (cloexec, nonblock bool) {
	t.Helper()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd&unix.FD_CLOEXEC != 0, fl&unix.O_NONBLOCK != 0
}

func TestBindTCPAndUnix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	ls := mustBind(t, "web=127.0.0.1:0", "unix://"+path)
	if len(ls) != 2 {
		t.Fatalf("Bind gave %d listeners, want 2", len(ls))
	}
	web, app := ls[0], ls[1]
	if web.Name != "web" || web.Network != TCP || !strings.HasPrefix(web.Address, "127.0.0.1:") || web.Address == "127.0.0.1:0" {
		t.Errorf("tcp listener = %+v, want web tcp 127.0.0.1:<kernel port>", web)
	}
	if app.Name != path || app.Network != Unix || app.Address != path {
		t.Errorf("unix listener = %+v, want %s", app, path)
	}
	for _, l := range ls {
		cloexec, nonblock := fdFlags(t, l.File)
		if !cloexec || nonblock {
			t.Errorf("%s: cloexec=%v nonblock=%v, want close-on-exec and blocking", l.URL(), cloexec, nonblock)
		}
		v, err := unix.GetsockoptInt(int(l.File.Fd()), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil || v != 1 {
			t.Errorf("%s: SO_ACCEPTCONN = %d, %v; want a listening socket", l.URL(), v, err)
		}
	}
	v, err := unix.GetsockoptInt(int(web.File.Fd()), unix.SOL_SOCKET, unix.SO_REUSEADDR)
	if err != nil || v != 1 {
		t.Errorf("SO_REUSEADDR = %d, %v; want 1", v, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != DefaultUnixMode {
		t.Errorf("socket file mode = %v, want %v", fi.Mode().Perm(), os.FileMode(DefaultUnixMode))
	}
	serveOnce(t, web, "from web")
	serveOnce(t, app, "from app")
	if got := dialRead(t, "tcp", web.Address); got != "from web" {
		t.Errorf("tcp read %q", got)
	}
	if got := dialRead(t, "unix", path); got != "from app" {
		t.Errorf("unix read %q", got)
	}
}

func TestBindUnixMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "private.sock")
	specs := mustSpecs(t, "unix://"+path)
	specs[0].Mode = 0o600
	ls, err := Bind(specs)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(ls)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", fi.Mode().Perm())
	}
}

func TestBindAddressInUse(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	_, err = Bind(mustSpecs(t, addr))
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Bind(%s) = %v, want EADDRINUSE", addr, err)
	}
	want := "listen: cannot bind " + addr + ": address already in use: another process listens there; stop it or choose another address"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
}

func TestBindFailureReleasesEarlierListeners(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	path := filepath.Join(t.TempDir(), "first.sock")
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()

	ls, err := Bind(mustSpecs(t, "unix://"+path, freeAddr, busy.Addr().String()))
	if err == nil {
		Close(ls)
		t.Fatal("Bind succeeded with a busy address")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file of the failed Bind left behind: %v", err)
	}
	// The TCP socket bound before the failure must be closed again.
	again, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Errorf("address bound before the failure is still held: %v", err)
	} else {
		again.Close()
	}
}

func TestBindErrorHints(t *testing.T) {
	tcp := Spec{Name: "x", Network: TCP, Address: "127.0.0.1:80"}
	sock := Spec{Name: "x", Network: Unix, Address: "/nope/x.sock"}
	tests := []struct {
		s    Spec
		err  error
		want string
	}{
		{tcp, unix.EACCES, "listen: cannot bind 127.0.0.1:80: permission denied: use a port >= 1024, run as root or grant CAP_NET_BIND_SERVICE"},
		{tcp, unix.EADDRNOTAVAIL, "listen: cannot bind 127.0.0.1:80: cannot assign requested address: the host is not an address of this machine; use one it has, or leave HOST empty for all"},
		{sock, unix.EACCES, "listen: cannot bind unix:///nope/x.sock: permission denied: check that this user may write to the directory"},
		{tcp, unix.EINVAL, "listen: cannot bind 127.0.0.1:80: invalid argument"},
	}
	for _, tt := range tests {
		err := bindError(tt.s, tt.err)
		if err.Error() != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("bindError(%s, %v) = %q\nwant %q", tt.s.URL(), tt.err, err, tt.want)
		}
	}
}

func TestBindNotAnAddressOfThisMachine(t *testing.T) {
	// 192.0.2.0/24 is TEST-NET-1: never assigned to a host.
	_, err := Bind(mustSpecs(t, "192.0.2.1:0"))
	if !errors.Is(err, unix.EADDRNOTAVAIL) || !strings.Contains(err.Error(), "192.0.2.1:0") {
		t.Fatalf("Bind(192.0.2.1:0) = %v, want EADDRNOTAVAIL naming the address", err)
	}
}

func TestBindUnixMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "x.sock")
	_, err := Bind(mustSpecs(t, "unix://"+path))
	if !errors.Is(err, unix.ENOENT) || !strings.Contains(err.Error(), "create it first") {
		t.Fatalf("Bind = %v, want ENOENT with a hint", err)
	}
}

func TestBindRemovesStaleUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close() // the file stays, nobody listens: stale
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("stale socket file not in place: %v", err)
	}
	ls := mustBind(t, "unix://"+path)
	serveOnce(t, ls[0], "fresh")
	if got := dialRead(t, "unix", path); got != "fresh" {
		t.Errorf("read %q from the rebound socket", got)
	}
}

func TestBindRefusesLiveUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "live.sock")
	live, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	_, err = Bind(mustSpecs(t, "unix://"+path))
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Bind on a live socket = %v, want EADDRINUSE", err)
	}
	want := "listen: cannot bind unix://" + path + ": address already in use: a process is listening on it; stop it or choose another path"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	// The live socket is untouched and still answers.
	// (Bind's probe connection sits in its queue too: answer every one.)
	go func() {
		for {
			c, err := live.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "still here")
			c.Close()
		}
	}()
	if got := dialRead(t, "unix", path); got != "still here" {
		t.Errorf("live socket answered %q", got)
	}
}

func TestBindRefusesLiveDatagramSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dgram.sock")
	live, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, err := Bind(mustSpecs(t, "unix://"+path)); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("Bind over a bound datagram socket = %v, want EADDRINUSE", err)
	}
}

func TestBindRefusesNonSocketPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Bind(mustSpecs(t, "unix://"+path))
	if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Fatalf("Bind over a regular file = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Errorf("regular file changed: %q", b)
	}
}

func TestBindEmptyHostTakesIPv4Too(t *testing.T) {
	ls := mustBind(t, ":0")
	_, port, err := net.SplitHostPort(ls[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(ls[0].Address, "[::]:") {
		v6only, err := unix.GetsockoptInt(int(ls[0].File.Fd()), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if err != nil || v6only != 0 {
			t.Errorf("IPV6_V6ONLY = %d, %v; want 0 for an empty host", v6only, err)
		}
	} else if !strings.HasPrefix(ls[0].Address, "0.0.0.0:") {
		t.Fatalf(":0 bound %s, want [::] or, without IPv6, 0.0.0.0", ls[0].Address)
	}
	serveOnce(t, ls[0], "v4")
	if got := dialRead(t, "tcp4", net.JoinHostPort("127.0.0.1", port)); got != "v4" {
		t.Errorf("read %q over IPv4", got)
	}
}

func TestBindResolvesHostNameToIPv4First(t *testing.T) {
	ls := mustBind(t, "localhost:0")
	if !strings.HasPrefix(ls[0].Address, "127.") {
		t.Fatalf("localhost:0 bound %s, want the IPv4 loopback", ls[0].Address)
	}
}

// Bound sockets are blocking, as systemd passes them; SetNonblocking sets
// O_NONBLOCK on the description a worker's copy shares, so the worker's
// accept4 on an empty queue returns EAGAIN instead of blocking.
func TestSetNonblocking(t *testing.T) {
	specs, err := ParseSpecs([]string{"127.0.0.1:0", "unix://" + filepath.Join(t.TempDir(), "s.sock")})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := Bind(specs)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(ls)
	flags := func(l Listener) (nonblocking bool, worker int) {
		t.Helper()
		rc, err := l.File.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var fl int
		var ferr error
		rc.Control(func(fd uintptr) {
			fl, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0)
			if ferr == nil {
				worker, ferr = unix.Dup(int(fd)) // a worker's copy
			}
		})
		if ferr != nil {
			t.Fatal(ferr)
		}
		return fl&unix.O_NONBLOCK != 0, worker
	}
	for _, l := range ls {
		nb, w := flags(l)
		unix.Close(w)
		if nb {
			t.Errorf("%s: bound non-blocking; want blocking, as systemd passes sockets", l.URL())
		}
	}
	if err := SetNonblocking(ls); err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		nb, w := flags(l)
		if !nb {
			unix.Close(w)
			t.Errorf("%s: still blocking after SetNonblocking", l.URL())
			continue // an accept4 would block the test
		}
		_, _, err := unix.Accept4(w, unix.SOCK_CLOEXEC)
		unix.Close(w)
		if !errors.Is(err, unix.EAGAIN) {
			t.Errorf("%s: a worker's accept4 on an empty queue: %v, want EAGAIN", l.URL(), err)
		}
	}
}
