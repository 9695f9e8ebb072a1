package listen

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// childLines reads the child's listener lines up to "end".
func childLines(t *testing.T, r io.Reader) []string {
	t.Helper()
	var lines []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if sc.Text() == "end" {
			return lines
		}
		lines = append(lines, sc.Text())
	}
	t.Fatalf("child output ended before \"end\" (%v); lines: %q", sc.Err(), lines)
	return nil
}

func TestListenersSurviveReExec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "admin.sock")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=reexec-bind", "LISTEN_TEST_PATH="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := childLines(t, out)
	if len(lines) != 2 {
		t.Fatalf("new image has %d listeners, want 2: %q", len(lines), lines)
	}
	web := strings.Fields(lines[0])
	admin := strings.Fields(lines[1])
	if web[0] != "web" || web[1] != TCP || !strings.HasPrefix(web[2], "127.0.0.1:") {
		t.Errorf("first listener after exec: %q", lines[0])
	}
	if admin[0] != "admin" || admin[1] != Unix || admin[2] != path {
		t.Errorf("second listener after exec: %q", lines[1])
	}
	for _, l := range lines {
		if !strings.HasSuffix(l, "cloexec=true nonblock=false") {
			t.Errorf("after exec %q, want close-on-exec set again and blocking", l)
		}
	}
	if got := dialRead(t, "tcp", web[2]); got != "web" {
		t.Errorf("tcp socket answered %q after exec", got)
	}
	if got := dialRead(t, "unix", path); got != "admin" {
		t.Errorf("unix socket answered %q after exec", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct{ value, want string }{
		{"web", `entry "web" is not FD=NAME`},
		{"2=stderr", `entry "2=stderr" is not FD=NAME with FD >= 3`},
		{"x=web", `entry "x=web"`},
		{"999999=gone", `fd 999999 ("gone") is not open`},
	}
	for _, tt := range tests {
		ls, err := Decode(tt.value)
		if err == nil {
			Close(ls)
			t.Errorf("Decode(%q) succeeded", tt.value)
			continue
		}
		if !strings.HasPrefix(err.Error(), "listen: "+EnvInherited) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Decode(%q) = %q, want %q", tt.value, err, tt.want)
		}
	}
	if ls, err := Decode(""); ls != nil || err != nil {
		t.Errorf(`Decode("") = %v, %v; want nothing`, ls, err)
	}
}

func TestDecodeRefusesListedTwice(t *testing.T) {
	ls := mustBind(t, "a=127.0.0.1:0")
	fd := strings.Split(Encode(ls), "=")[0]
	_, err := Decode(fd + "=a:" + fd + "=b")
	if err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Fatalf("Decode with a repeated fd = %v", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sock")
	ls := mustBind(t, "a=127.0.0.1:0", "b.v6=[::1]:0", "unix://"+path)
	// Decode takes over descriptors; give it duplicates so that the two
	// sets can be closed independently.
	dups := make([]Listener, len(ls))
	for i, l := range ls {
		fd, err := unix.Dup(int(l.File.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		dups[i] = Listener{Name: l.Name, File: os.NewFile(uintptr(fd), "dup")}
	}
	got, err := Decode(Encode(dups))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(got)
	if len(got) != len(ls) {
		t.Fatalf("decoded %d listeners, want %d", len(got), len(ls))
	}
	for i := range ls {
		if got[i].Name != ls[i].Name || got[i].Network != ls[i].Network || got[i].Address != ls[i].Address || got[i].File.Fd() != dups[i].File.Fd() {
			t.Errorf("listener %d: decoded %+v, want %+v on fd %d", i, got[i], ls[i], dups[i].File.Fd())
		}
	}
}

func TestKeepOnExecAndBack(t *testing.T) {
	ls := mustBind(t, "127.0.0.1:0", "127.0.0.1:0")
	files := Files(ls)
	if err := KeepOnExec(files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if cloexec, _ := fdFlags(t, f); cloexec {
			t.Errorf("fd %d still close-on-exec after KeepOnExec", f.Fd())
		}
	}
	if err := CloseOnExec(files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if cloexec, _ := fdFlags(t, f); !cloexec {
			t.Errorf("fd %d not close-on-exec after CloseOnExec", f.Fd())
		}
	}
}

func TestKeepOnExecUndoesOnError(t *testing.T) {
	ls := mustBind(t, "127.0.0.1:0")
	closed, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	err = KeepOnExec([]*os.File{ls[0].File, closed})
	if err == nil {
		t.Fatal("KeepOnExec with a closed file succeeded")
	}
	if cloexec, _ := fdFlags(t, ls[0].File); !cloexec {
		t.Error("KeepOnExec failed but left the first file without close-on-exec")
	}
}

func TestDupLeavesSocketNonBlocking(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := Dup(l.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := KeepOnExec([]*os.File{f}); err != nil { // calls f.Fd()
		t.Fatal(err)
	}
	if cloexec, nonblock := fdFlags(t, f); cloexec || !nonblock {
		t.Errorf("dup: cloexec=%v nonblock=%v; want kept across exec and still non-blocking", cloexec, nonblock)
	}
	// A deadline works only while the socket is non-blocking: on a
	// blocking one Accept sits in accept(2) and never sees it.
	tl := l.(*net.TCPListener)
	tl.SetDeadline(time.Now().Add(50 * time.Millisecond))
	accepted := make(chan error, 1)
	go func() {
		_, err := tl.Accept()
		accepted <- err
	}()
	select {
	case err := <-accepted:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Accept = %v, want its deadline exceeded", err)
		}
	case <-time.After(10 * time.Second):
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil { // wake accept(2) so that Close can finish
			c.Close()
		}
		t.Fatal("Accept ignored its deadline: the listener became blocking")
	}
	l.Close()
}
