package demo

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A busy port: no banner, one line that names the address, exit 1, and
// nothing exec'd.
func TestRunBindsBeforeTheBanner(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	var f fakeExec
	var out, errb bytes.Buffer
	code := run([]string{"--listen", busy.Addr().String()}, &out, &errb, executable, f.exec)
	if code != 1 || f.called || out.Len() != 0 || !strings.Contains(errb.String(), busy.Addr().String()) || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("busy %s: exit %d, exec called %v, stdout %q, stderr %q; want exit 1, no banner and one line naming the address",
			busy.Addr(), code, f.called, out.String(), errb.String())
	}
}

// The watch line works for every --listen form: a wildcard host is
// reached on loopback, a name is no part of the URL, a unix socket goes
// through curl --unix-socket.
func TestRunBannerURL(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	sock := filepath.Join(t.TempDir(), "web.sock")
	for _, tc := range []struct {
		listen string
		want   string // with PORT for the port the kernel chose
	}{
		{":0", "curl -sS http://127.0.0.1:PORT/"},
		{"0.0.0.0:0", "curl -sS http://127.0.0.1:PORT/"},
		{"web=127.0.0.1:0", "curl -sS http://127.0.0.1:PORT/"},
		{"tcp://127.0.0.1:0", "curl -sS http://127.0.0.1:PORT/"},
		{"[::]:0", "curl -sS http://[::1]:PORT/"},
		{"unix://" + sock, "curl -sS --unix-socket " + sock + " http://localhost/"},
		{"web=unix://" + sock, "curl -sS --unix-socket " + sock + " http://localhost/"},
	} {
		var f fakeExec
		var out bytes.Buffer
		run([]string{"--listen", tc.listen}, &out, io.Discard, executable, f.exec)
		text := out.String()
		want := tc.want
		if strings.Contains(want, "PORT") {
			m := regexp.MustCompile(`curl -sS http://(\S+)/;`).FindStringSubmatch(text)
			if m == nil {
				t.Errorf("--listen %s: no curl line in the banner:\n%s", tc.listen, text)
				continue
			}
			_, port, _ := net.SplitHostPort(m[1])
			if port == "" || port == "0" {
				t.Errorf("--listen %s: the banner gives port %q:\n%s", tc.listen, port, text)
			}
			want = strings.Replace(want, "PORT", port, 1)
		}
		if !strings.Contains(text, want) {
			t.Errorf("--listen %s: the banner lacks %q:\n%s", tc.listen, want, text)
		}
	}
}

// Under go run the binary is in the build cache: the banner names the
// command a person can type instead.
func TestRunBannerUnderGoRun(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	cached := func() (string, error) { return "/tmp/go-build123456/b001/exe/mworker", nil }
	var f fakeExec
	var out bytes.Buffer
	run([]string{"--listen", "127.0.0.1:0"}, &out, io.Discard, cached, f.exec)
	if strings.Contains(out.String(), "go-build") || !strings.Contains(out.String(), "mworker reload --control") {
		t.Errorf("banner under go run:\n%s", out.String())
	}
	if f.path != "/tmp/go-build123456/b001/exe/mworker" {
		t.Errorf("exec'd %q, want the running binary", f.path)
	}
}
