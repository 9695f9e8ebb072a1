package osadapter

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/e2etest"
)

func TestTakeoverCheckRunsBeforeTheExec(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{CheckTakeover: true, Listen: nil}, nil)
	fakeListeners(t, f, l, []string{"x"}, 7)
	l.start()
	f.calls = nil
	st := reload(t, f, l)
	if len(f.checks) != 1 {
		t.Fatalf("%d takeover checks before the exec, want 1 (calls %q)", len(f.checks), f.calls)
	}
	c, e := f.checks[0], f.execs[0]
	if c.path != e.path {
		t.Errorf("checked %s, exec'd %s", c.path, e.path)
	}
	want := append([]string{e.argv[0], e.argv[1], CheckFlag}, e.argv[2:]...)
	if !slices.Equal(c.argv, want) {
		t.Errorf("check argv %q, want %q", c.argv, want)
	}
	if v, _ := lookupEnv(c.env, envState); v == "" || !slices.Contains(e.env, envState+"="+v) {
		t.Errorf("the check did not get the handover the exec passes")
	}
	// The check runs while the listeners are still close-on-exec.
	ci, ki := slices.Index(f.calls, "check /usr/bin/mworker"), slices.Index(f.calls, "cloexec 7 false")
	if ci < 0 || ki < 0 || ci > ki {
		t.Errorf("check at %d, fd 7 kept open at %d: %q", ci, ki, f.calls)
	}
	if len(st.Handover.Workers) != 2 {
		t.Errorf("handover has %d workers, want 2", len(st.Handover.Workers))
	}
}

func TestTakeoverCheckRefusalFailsTheReload(t *testing.T) {
	f := newFakeOS()
	f.checkErr = errors.New("it refuses to take over (exit status 2): mworker: unknown option --x")
	l, logs := fakeLoop(t, f, Config{CheckTakeover: true}, nil)
	fakeListeners(t, f, l, []string{"x"}, 7)
	l.start()
	f.calls = nil
	l.step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
	if len(f.execs) != 0 {
		t.Fatalf("exec'd a binary that refused the takeover: %q", f.calls)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "cloexec 7 false") {
			t.Errorf("fd 7 was handed over although the check failed: %q", f.calls)
		}
	}
	if l.m.State() != "running" || l.done() {
		t.Fatalf("state %s done=%v after a refused takeover, want running", l.m.State(), l.done())
	}
	if !strings.Contains(logs.String(), "unknown option --x") {
		t.Errorf("the reason is not logged:\n%s", logs)
	}
	f.checkErr = nil
	reload(t, f, l)
}

func TestNoTakeoverCheckUnlessAsked(t *testing.T) {
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	reload(t, f, l)
	if len(f.checks) != 0 {
		t.Fatalf("a takeover check ran without Config.CheckTakeover")
	}
}

func TestRunCheck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := e2etest.WriteExecutable(p, "#!/bin/sh\n"+body+"\n"); err != nil {
			t.Fatal(err)
		}
		return p
	}
	argv := checkArgv([]string{"mworker", "run", "-n", "2", "--", "server"})
	if !slices.Equal(argv, []string{"mworker", "run", CheckFlag, "-n", "2", "--", "server"}) {
		t.Fatalf("checkArgv: %q", argv)
	}
	for _, tt := range []struct {
		name, body string
		want       string // "" = accepted
	}{
		{"accepts", `[ "$1" = run ] && [ "$2" = ` + CheckFlag + ` ] && [ "$MWORKER_STATE" = x ] || exit 9; echo fine`, ""},
		{"refuses", `echo first line; echo 'mworker: bad handover' >&2; exit 1`, "(exit status 1): mworker: bad handover"},
		{"silent", `exit 3`, "(exit status 3): it printed nothing"},
		{"crashes", `kill -ABRT $$`, "(killed by ABRT)"},
		{"stdin is empty", `read line && exit 4; exit 0`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := runCheck(script(tt.name, tt.body), argv, []string{"MWORKER_STATE=x", "PATH=/usr/bin:/bin"}, 10*time.Second)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}

	t.Run("no answer", func(t *testing.T) {
		t.Parallel()
		pidFile := filepath.Join(dir, "hang.pid")
		start := time.Now()
		err := runCheck(script("hang", `echo $$ > `+pidFile+`; exec sleep 1000`), argv, nil, 300*time.Millisecond)
		if err == nil || !strings.Contains(err.Error(), "did not answer the takeover check within 300ms") {
			t.Fatalf("got %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
		b, _ := os.ReadFile(pidFile)
		pid := 0
		for _, c := range strings.TrimSpace(string(b)) {
			pid = pid*10 + int(c-'0')
		}
		if pid <= 0 {
			t.Fatalf("no pid written: %q", b)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("the hung check %d is still there (kill 0: %v)", pid, err)
		}
	})

	t.Run("not executable", func(t *testing.T) {
		t.Parallel()
		// Not executable: execve refuses it before it looks for writers.
		p := filepath.Join(dir, "plain")
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := runCheck(p, argv, nil, time.Second); err == nil || !errors.Is(err, syscall.EACCES) {
			t.Fatalf("got %v, want EACCES", err)
		}
	})
}

func TestCheckHandover(t *testing.T) {
	// A real handover, from a fake master's reload.
	f := newFakeOS()
	l, _ := fakeLoop(t, f, Config{}, nil)
	l.start()
	reload(t, f, l)
	v, _ := lookupEnv(f.execs[0].env, envState)

	cfg := Config{Command: []string{"/bin/worker", "-x"}}
	cfg.Machine = fsm.Config{Workers: 2, ReadyTimeout: 30e9, StopTimeout: 10e9, StopSignal: 15}

	t.Setenv(envState, v)
	if err := CheckHandover(cfg); err != nil {
		t.Fatalf("a handover from this version refused: %v", err)
	}
	t.Setenv(envState, "not base64 gob")
	if err := CheckHandover(cfg); err == nil {
		t.Fatal("a corrupt handover accepted")
	}
	os.Unsetenv(envState)
	if err := CheckHandover(cfg); err == nil || !strings.Contains(err.Error(), "no handover") {
		t.Fatalf("no handover: %v", err)
	}
}

func TestNoTakeoverCheckForTheRunningBinary(t *testing.T) {
	f := newFakeOS()
	f.running = true
	f.checkErr = errors.New("must not be asked")
	l, _ := fakeLoop(t, f, Config{CheckTakeover: true}, nil)
	l.start()
	reload(t, f, l)
	if len(f.checks) != 0 {
		t.Fatalf("the running binary was checked: %q", f.calls)
	}
}

func TestIsRunningImage(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if !isRunningImage(self) {
		t.Errorf("%s is not the running image", self)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(self, link); err != nil {
		t.Fatal(err)
	}
	if !isRunningImage(link) {
		t.Errorf("a symlink to the running image is not it")
	}
	other := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(other, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if isRunningImage(other) || isRunningImage(filepath.Join(t.TempDir(), "none")) {
		t.Errorf("another file, or none, is the running image")
	}
}
