package osadapter

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

func TestParseFdEnv(t *testing.T) {
	for _, c := range []struct {
		spec string
		n    int
		want string
	}{
		{"NGINX={fds:;};", 1, "NGINX=3;"},
		{"NGINX={fds:;};", 2, "NGINX=3;4;"},
		{"FDS={fds}", 3, "FDS=3,4,5"},
		{"X=a{fds: }b{fds:--}c", 2, "X=a3 4b3--4c"},
		{"x_1=={fds}=", 1, "x_1==3="},
	} {
		e, err := ParseFdEnv(c.spec)
		if err != nil {
			t.Errorf("ParseFdEnv(%q): %v", c.spec, err)
			continue
		}
		if got := e.expand(c.n); got != c.want {
			t.Errorf("ParseFdEnv(%q).expand(%d) = %q, want %q", c.spec, c.n, got, c.want)
		}
		if e.String() != c.spec {
			t.Errorf("ParseFdEnv(%q).String() = %q", c.spec, e.String())
		}
	}
}

func TestParseFdEnvRefuses(t *testing.T) {
	for _, c := range []struct{ spec, says string }{
		{"NGINX", "write NAME=FORMAT"},
		{"=3;", `name ""`},
		{"1X={fds}", `name "1X"`},
		{"A-B={fds}", `name "A-B"`},
		{"LISTEN_FDS={fds}", "mworker sets it itself"},
		{"MWORKER_X={fds}", "mworker sets it itself"},
		{"NOTIFY_SOCKET={fds}", "mworker sets it itself"},
		{"NGINX=3;", "names no fd"},
		{"NGINX=", "names no fd"},
		{"NGINX={fd};", "placeholder {fd}"},
		{"NGINX={fds:};", "placeholder {fds:}"},
		{"NGINX={fds", "unbalanced"},
		{"NGINX=}{fds}", "unbalanced"},
		{"NGINX={{fds}}", "placeholder {{fds}"},
	} {
		_, err := ParseFdEnv(c.spec)
		if err == nil || !strings.Contains(err.Error(), c.says) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseFdEnv(%q) = %v, want one line saying %q", c.spec, err, c.says)
		}
	}
}

// TestFdEnvForReal spawns a worker with two listeners and --fd-env
// variables: it sees them expanded, and the master's own variable of the
// same name is not what it gets; a worker without listeners gets none.
func TestFdEnvForReal(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	var fdEnv []FdEnv
	for _, s := range []string{"NGINX={fds:;};", "SERVER_FDS=[{fds}]"} {
		e, err := ParseFdEnv(s)
		if err != nil {
			t.Fatal(err)
		}
		fdEnv = append(fdEnv, e)
	}
	script := `echo "$NGINX|$SERVER_FDS|${OTHER-unset}" > ` + out + `.tmp && mv ` + out + `.tmp ` + out
	env := withoutVars(workerEnv([]string{"PATH=/usr/bin:/bin", "NGINX=9;", "OTHER=kept"}), fdEnvNames(fdEnv)...)
	run := func(listeners int) string {
		t.Helper()
		os.Remove(out)
		sys := realOS()
		l := &loop{sys: sys, command: []string{"/bin/sh", "-c", script}, workerEnv: env, fdEnv: fdEnv}
		l.fds.fstat = sys.Fstat
		for i := range listeners {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			if _, err := l.fds.addListener("pipe"+itoa(i), r); err != nil {
				t.Fatal(err)
			}
		}
		pid, err := l.spawn(1, 0)
		if err != nil {
			t.Fatal(err)
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
			t.Fatalf("worker: wait4 %v, status %v", err, ws)
		}
		var b []byte
		e2etest.WaitFor(t, 5*time.Second, "the worker's report", func() bool {
			b, err = os.ReadFile(out)
			return err == nil
		})
		return strings.TrimSpace(string(b))
	}
	if got, want := run(2), "3;4;|[3,4]|kept"; got != want {
		t.Errorf("with two listeners the worker saw %q, want %q", got, want)
	}
	if got, want := run(0), "||kept"; got != want {
		t.Errorf("without listeners the worker saw %q, want %q", got, want)
	}
	if slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "NGINX=") }) {
		t.Errorf("the master's NGINX reaches the worker environment: %q", env)
	}
}
