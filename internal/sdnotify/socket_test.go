package sdnotify

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envChild makes the test binary a child that sends its argument to
// NOTIFY_SOCKET and exits (the tests re-run it through TestMain).
const envChild = "SDNOTIFY_TEST_SEND"

func TestMain(m *testing.M) {
	if state, ok := os.LookupEnv(envChild); ok {
		if err := Notify(state); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func listenIn(t *testing.T, addr string) *Socket {
	t.Helper()
	s, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func pathSocket(t *testing.T) *Socket {
	t.Helper()
	return listenIn(t, filepath.Join(t.TempDir(), "w.sock"))
}

func abstractSocket(t *testing.T) *Socket {
	t.Helper()
	return listenIn(t, fmt.Sprintf("@mworker-test/%d/%s", os.Getpid(), t.Name()))
}

// receive runs Receive with a deadline so that a lost datagram fails the
// test instead of hanging it.
func receive(t *testing.T, s *Socket) (Datagram, error) {
	t.Helper()
	type result struct {
		d   Datagram
		err error
	}
	ch := make(chan result, 1)
	go func() {
		d, err := s.Receive()
		ch <- result{d, err}
	}()
	select {
	case r := <-ch:
		return r.d, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("no datagram within 10s")
		return Datagram{}, nil
	}
}

func TestReadyFromSameUIDAccepted(t *testing.T) {
	s := pathSocket(t)
	if err := Send(s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	d, err := receive(t, s)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Message.Ready || d.PID != os.Getpid() || d.UID != os.Getuid() || d.GID != os.Getgid() {
		t.Errorf("got %+v, want READY from pid %d uid %d", d, os.Getpid(), os.Getuid())
	}
}

func TestReadyFromChildProcessCarriesItsPid(t *testing.T) {
	s := pathSocket(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), EnvNotifySocket+"="+s.Addr(), envChild+"=READY=1\nSTATUS=child up")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v", err)
	}
	d, err := receive(t, s)
	if err != nil {
		t.Fatal(err)
	}
	status, _ := d.Message.Status()
	if !d.Message.Ready || status != "child up" || d.PID != cmd.Process.Pid {
		t.Errorf("got %+v, want READY and STATUS from pid %d", d, cmd.Process.Pid)
	}
}

func TestSendExactBytes(t *testing.T) {
	for name, s := range map[string]*Socket{"path": pathSocket(t), "abstract": abstractSocket(t)} {
		state := Join(ReloadingAt(42), Status("reloading: generation 3"), "X_EXTRA=é")
		if err := Send(s.Addr(), state); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d, err := receive(t, s)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(d.Payload) != state {
			t.Errorf("%s: received %q, sent %q", name, d.Payload, state)
		}
		if !d.Message.Reloading || d.Message.MonotonicUsec != 42 {
			t.Errorf("%s: parsed %+v", name, d.Message)
		}
	}
}

func TestNotifyFollowsEnvironment(t *testing.T) {
	s := abstractSocket(t)
	t.Setenv(EnvNotifySocket, s.Addr())
	if err := Notify(Stopping()); err != nil {
		t.Fatal(err)
	}
	d, err := receive(t, s)
	if err != nil || !d.Message.Stopping || string(d.Payload) != "STOPPING=1" {
		t.Fatalf("received %+v, %v", d, err)
	}
	t.Setenv(EnvNotifySocket, "")
	if err := Notify(Stopping()); err != nil {
		t.Errorf("Notify without NOTIFY_SOCKET = %v, want nil", err)
	}
	os.Unsetenv(EnvNotifySocket)
	if err := Notify(Stopping()); err != nil {
		t.Errorf("Notify with NOTIFY_SOCKET unset = %v, want nil", err)
	}
}

func TestSendErrors(t *testing.T) {
	if err := Send("relative/path", "READY=1"); err == nil || !strings.Contains(err.Error(), "use an absolute path or an abstract @NAME") {
		t.Errorf("Send to a relative path = %v", err)
	}
	missing := filepath.Join(t.TempDir(), "nobody.sock")
	if err := Send(missing, "READY=1"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Send to a missing socket = %v, want ENOENT", err)
	}
	if err := Send("@x", strings.Repeat("x", MaxSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send of MaxSize+1 bytes = %v, want ErrTooLarge", err)
	}
}

// A receiver that does not read makes Send drop the datagram at once, as
// sd_notify does, instead of waiting for room (the master once waited 5 s
// per notification).
func TestSendToAFullQueueDropsAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deaf.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	// Send until it fails: each Send uses a socket of its own, so the
	// receiver's queue (net.unix.max_dgram_qlen) is what fills.
	for i := 0; ; i++ {
		if i == 100_000 {
			t.Fatal("100,000 datagrams queued and no send failed")
		}
		err := Send(path, "STATUS=filler")
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrQueueFull) || !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("Send to a full queue = %v, want ErrQueueFull and EAGAIN", err)
		}
		break
	}
	// The queue drains: sends go through again.
	buf := make([]byte, MaxSize)
	if _, _, err := unix.Recvfrom(fd, buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := Send(path, "READY=1"); err != nil {
		t.Fatalf("Send once the queue has room = %v", err)
	}
}

// sendRaw sends payload with control data oob from a fresh socket.
func sendRaw(t *testing.T, addr string, payload, oob []byte) error {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return unix.Sendmsg(fd, payload, oob, &unix.SockaddrUnix{Name: addr}, 0)
}

func TestGarbageRejectedAndSocketCarriesOn(t *testing.T) {
	s := pathSocket(t)
	for _, bad := range []string{"hello", "READY=0", "ready=1", "STATUS=\xff"} {
		if err := sendRaw(t, s.Addr(), []byte(bad), nil); err != nil {
			t.Fatal(err)
		}
		d, err := receive(t, s)
		if !errors.Is(err, ErrRejected) || !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: Receive = %v, want ErrRejected and ErrMalformed", bad, err)
		}
		if d.PID != os.Getpid() || string(d.Payload) != bad || d.Message.Fields != nil {
			t.Errorf("%q: rejected datagram %+v, want its pid and payload and no message", bad, d)
		}
		if !strings.Contains(err.Error(), "datagram from pid "+strconv.Itoa(os.Getpid())) {
			t.Errorf("error %q does not name the sender", err)
		}
	}
	if err := sendRaw(t, s.Addr(), []byte(strings.Repeat("x", MaxSize+100)), nil); err != nil {
		t.Fatal(err)
	}
	if d, err := receive(t, s); !errors.Is(err, ErrRejected) || !errors.Is(err, ErrTooLarge) || len(d.Payload) != MaxSize {
		t.Errorf("oversized: %d bytes kept, %v; want ErrTooLarge", len(d.Payload), err)
	}
	if err := Send(s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	if d, err := receive(t, s); err != nil || !d.Message.Ready {
		t.Errorf("after rejections: %+v, %v", d, err)
	}
}

func TestForeignUIDRejected(t *testing.T) {
	s := pathSocket(t)
	s.uid = os.Getuid() + 1 // as if the master ran as another user
	if err := Send(s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	d, err := receive(t, s)
	if !errors.Is(err, ErrRejected) || !errors.Is(err, ErrForeignUID) {
		t.Fatalf("Receive = %v, want ErrForeignUID", err)
	}
	if d.UID != os.Getuid() || d.PID != os.Getpid() || d.Message.Ready {
		t.Errorf("rejected datagram %+v", d)
	}
}

// Accept adds the workers' uid (mworker run --user): theirs is taken,
// besides the master's own.
func TestAcceptedUID(t *testing.T) {
	s := pathSocket(t)
	s.uid = os.Getuid() + 1 // the master's own, here another
	s.Accept(os.Getuid())   // the workers'
	if err := Send(s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	if d, err := receive(t, s); err != nil || !d.Message.Ready || d.UID != os.Getuid() {
		t.Fatalf("Receive = %+v, %v; want READY=1 from the accepted uid", d, err)
	}
	s.Accept(-1)
	if err := Send(s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := receive(t, s); !errors.Is(err, ErrForeignUID) {
		t.Fatalf("after Accept(-1): %v, want ErrForeignUID", err)
	}
}

func TestForgedCredentialsRejected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sending another uid in SCM_CREDENTIALS needs CAP_SETUID; TestForeignUIDRejected covers the check")
	}
	s := pathSocket(t)
	creds := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: 65534, Gid: 65534})
	if err := sendRaw(t, s.Addr(), []byte("READY=1"), creds); err != nil {
		t.Fatalf("sendmsg with uid 65534: %v", err)
	}
	d, err := receive(t, s)
	if !errors.Is(err, ErrForeignUID) || d.UID != 65534 {
		t.Fatalf("Receive = %+v, %v; want uid 65534 rejected", d, err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestDescriptorsRejectedAndClosed(t *testing.T) {
	s := pathSocket(t)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := openFDs(t)
	rights := unix.UnixRights(int(f.Fd()), int(f.Fd()), int(f.Fd()))
	if err := sendRaw(t, s.Addr(), []byte("FDSTORE=1"), rights); err != nil {
		t.Fatal(err)
	}
	if _, err := receive(t, s); !errors.Is(err, ErrCarriesFDs) {
		t.Fatalf("Receive = %v, want ErrCarriesFDs", err)
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d descriptors open before, %d after: received ones leaked", before, after)
	}
}

// sd_notify_barrier(3), which systemd-notify --ready sends after its
// message: "BARRIER=1" with the write end of a pipe; the sender waits for
// EOF on the read end, so the receiver must close that descriptor.
func TestBarrierAcceptedAndReleased(t *testing.T) {
	s := pathSocket(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := openFDs(t)
	err = sendRaw(t, s.Addr(), []byte("BARRIER=1"), unix.UnixRights(int(w.Fd())))
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	d, err := receive(t, s)
	if err != nil || d.Message.Fields[0] != (Field{"BARRIER", "1"}) {
		t.Fatalf("barrier: %+v, %v", d, err)
	}
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := r.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("barrier pipe read = %d, %v; want EOF (the receiver closed its end)", n, err)
	}
	if after := openFDs(t); after != before-1 {
		t.Errorf("%d descriptors open before (with our write end), %d after; want one fewer", before, after)
	}
	for _, tt := range []struct {
		payload string
		fds     int
	}{{"BARRIER=1", 2}, {"READY=1", 1}, {"BARRIER=1\nREADY=1", 1}} {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fds := make([]int, tt.fds)
		for i := range fds {
			fds[i] = int(f.Fd())
		}
		err = sendRaw(t, s.Addr(), []byte(tt.payload), unix.UnixRights(fds...))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := receive(t, s); !errors.Is(err, ErrCarriesFDs) {
			t.Errorf("%q with %d descriptors: %v, want ErrCarriesFDs", tt.payload, tt.fds, err)
		}
	}
}

func TestCloseWakesReceiveAndRemovesFile(t *testing.T) {
	s, err := Listen(filepath.Join(t.TempDir(), "w.sock"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Receive()
		done <- err
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrRejected) {
			t.Errorf("Receive after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Receive still blocked 10s after Close")
	}
	if _, err := os.Lstat(s.Addr()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

func TestFileHandsOverQueuedDatagrams(t *testing.T) {
	for _, s := range []*Socket{pathSocket(t), abstractSocket(t)} {
		if err := Send(s.Addr(), "READY=1"); err != nil {
			t.Fatal(err)
		}
		f, err := s.File()
		if err != nil {
			t.Fatal(err)
		}
		next, err := FromFile(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if next.Addr() != s.Addr() {
			t.Errorf("taken over socket at %q, want %q", next.Addr(), s.Addr())
		}
		s.conn.Close() // the old image is gone; its file stays for next
		d, err := receive(t, next)
		if err != nil || !d.Message.Ready {
			t.Errorf("%s: queued datagram after the handover: %+v, %v", s.Addr(), d, err)
		}
		next.Close()
	}
}

func TestFileKeepsSocketUsableAfterFailedExec(t *testing.T) {
	s := pathSocket(t)
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Fd() // what listen.KeepOnExec does before the exec
	// A read deadline works only while the socket is non-blocking.
	s.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := s.Receive()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Receive = %v, want its deadline exceeded", err)
		}
	case <-time.After(10 * time.Second):
		Send(s.Addr(), "READY=1") // wake the blocked recvmsg so that Close can finish
		t.Fatal("Receive ignored its deadline: File made the socket blocking")
	}
}

func TestFromFileRefusesOtherSockets(t *testing.T) {
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "stream.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f, err := l.(*net.UnixListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := FromFile(f); err == nil {
		t.Error("FromFile took over a stream listener")
	}
}

func TestListenRefusesBadAddresses(t *testing.T) {
	for _, addr := range []string{"", "@", "relative.sock", "/" + strings.Repeat("x", 120)} {
		if s, err := Listen(addr); err == nil || !strings.HasPrefix(err.Error(), "sdnotify: ") {
			if s != nil {
				s.Close()
			}
			t.Errorf("Listen(%.20q) = %v", addr, err)
		}
	}
	s := pathSocket(t)
	if _, err := Listen(s.Addr()); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("Listen on a taken path = %v, want EADDRINUSE", err)
	}
}

func TestMakeDirIsPrivate(t *testing.T) {
	dir, err := MakeDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 || !fi.IsDir() || !strings.HasPrefix(filepath.Base(dir), "mworker-") {
		t.Errorf("MakeDir made %s, %v", dir, fi.Mode())
	}
}
