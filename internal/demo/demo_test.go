package demo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/listen"
)

// fakeExec records what run would have exec'd.
type fakeExec struct {
	called     bool
	path       string
	argv, envv []string
	passed     []int // the fds of MWORKER_LISTENERS that would survive the exec
}

func (f *fakeExec) exec(path string, argv, envv []string) error {
	f.called, f.path, f.argv, f.envv = true, path, argv, envv
	for _, kv := range envv {
		v, ok := strings.CutPrefix(kv, listen.EnvInherited+"=")
		if !ok {
			continue
		}
		for _, e := range strings.Split(v, ":") {
			fdText, _, _ := strings.Cut(e, "=")
			fd, _ := strconv.Atoi(fdText)
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
				f.passed = append(f.passed, fd)
			}
		}
	}
	return errors.New("fake exec")
}

func executable() (string, error) { return "/opt/bin/mworker", nil }

func TestRunExecsTheMaster(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", dir)
	sock := filepath.Join(dir, SocketName)
	for _, tc := range []struct {
		args []string
		want []string
		url  string
	}{
		{[]string{"--listen", "127.0.0.1:0"}, []string{"/opt/bin/mworker", "run", "-n", "2", "--listen", "127.0.0.1:0", "--ready", "notify", "--control", sock, "--", "/opt/bin/mworker", "demo-worker"}, "http://127.0.0.1:"},
		{[]string{"--workers", "4", "--listen", "[::1]:0", "--control", filepath.Join(dir, "x.sock")}, []string{"/opt/bin/mworker", "run", "-n", "4", "--listen", "[::1]:0", "--ready", "notify", "--control", filepath.Join(dir, "x.sock"), "--", "/opt/bin/mworker", "demo-worker"}, "http://[::1]:"},
	} {
		var f fakeExec
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb, executable, f.exec)
		if code != 1 || !f.called || errb.String() != "mworker demo: cannot run /opt/bin/mworker: fake exec\n" {
			t.Fatalf("%q: exit %d, exec called %v, stderr %q", tc.args, code, f.called, errb.String())
		}
		if f.path != "/opt/bin/mworker" || strings.Join(f.argv, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%q: exec %s %q\nwant %q", tc.args, f.path, f.argv, tc.want)
		}
		// The bound socket goes to the master, open across the exec.
		if len(f.passed) != 1 {
			t.Errorf("%q: the exec would pass %v of %s, want the bound socket", tc.args, f.passed, listen.EnvInherited)
		}
		control := tc.want[9]
		for _, want := range []string{
			"curl -sS " + tc.url,
			"/opt/bin/mworker status --control " + control,
			"/opt/bin/mworker reload --control " + control,
			fmt.Sprintf("kill -USR2 %d", os.Getpid()),
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%q: instructions lack %q:\n%s", tc.args, want, out.String())
			}
		}
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--workers", "0"}, "mworker demo: --workers 0 out of range: use 1..1024"},
		{[]string{"--workers", "many"}, `invalid value "many" for flag -workers`},
		{[]string{"--listen", ""}, "--listen is empty"},
		{[]string{"--listen", "8080"}, `bad --listen value`},
		{[]string{"now"}, `unexpected argument "now"`},
		{[]string{"--port", "80"}, "flag provided but not defined: -port"},
	} {
		var f fakeExec
		var errb bytes.Buffer
		code := run(tc.args, io.Discard, &errb, executable, f.exec)
		if code != 2 || f.called || !strings.Contains(errb.String(), tc.msg) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%q: exit %d, exec called %v, stderr %q; want 2 and one line with %q", tc.args, code, f.called, errb.String(), tc.msg)
		}
	}
}
