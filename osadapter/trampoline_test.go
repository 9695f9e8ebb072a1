package osadapter

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

func TestSpawnThroughShellTrampoline(t *testing.T) {
	f := newFakeOS()
	f.shell = "/bin/sh"
	l, _ := fakeLoop(t, f, Config{}, nil)
	fakeListeners(t, f, l, []string{"web"}, 7)
	l.ignored = []syscall.Signal{syscall.SIGHUP, syscall.SIGINT}
	l.start()
	s := f.spawns[0]
	want := []string{"sh", "-c", `trap '' HUP INT; LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"`, "/bin/worker"}
	if s.argv0 != "/bin/sh" || !slices.Equal(s.argv[:len(want)], want) {
		t.Errorf("spawned %q %q, want /bin/sh %q followed by the command's argv", s.argv0, s.argv, want)
	}
	if slices.ContainsFunc(s.attr.Env, func(kv string) bool { return strings.HasPrefix(kv, envTrampoline+"=") }) {
		t.Errorf("worker env %q names the self-exec trampoline, which the shell replaces", s.attr.Env)
	}
	if !slices.Contains(s.attr.Env, "LISTEN_FDS=1") {
		t.Errorf("worker env %q lacks LISTEN_FDS=1", s.attr.Env)
	}
}

// Both trampolines, for real: the command sees LISTEN_PID and (with
// --watchdog) WATCHDOG_PID equal to its own pid, its listener as fd 3,
// SIGHUP ignored as mworker found it, and its own argv.
func TestTrampolinesForReal(t *testing.T) {
	for _, shell := range []string{"/bin/sh", ""} {
		name := "shell"
		if shell == "" {
			name = "self-exec"
		}
		t.Run(name, func(t *testing.T) {
			if shell != "" && findShell() == "" {
				t.Skip("no /bin/sh on this machine")
			}
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			sys := realOS()
			sys.Shell = shell
			if shell == "" {
				sys.SelfExe = testBinary(t) // its init runs the trampoline
			}
			script := `set -- "$0" "$@"; { echo "$LISTEN_PID $WATCHDOG_PID $$ $#"; grep SigIgn /proc/$$/status; [ -e /proc/$$/fd/3 ] && echo fd3; } > ` + out + `.tmp && mv ` + out + `.tmp ` + out
			env := append(withoutVars(os.Environ(), envWatchdogUsec, envWatchdogPid), envWatchdogUsec+"=2000000")
			l := &loop{sys: sys, command: []string{"/bin/sh", "-c", script, "arg one", "two"}, workerEnv: env,
				ignored: []syscall.Signal{syscall.SIGHUP}, watchdogPid: true}
			l.fds.fstat = sys.Fstat
			if _, err := l.fds.addListener("pipe", r); err != nil { // r still closes with the deferred Close
				t.Fatal(err)
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
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != 3 || lines[0] != fmt.Sprintf("%d %d %d 2", pid, pid, pid) || lines[2] != "fd3" {
				t.Fatalf("worker reported %q; want LISTEN_PID, WATCHDOG_PID and $$ all %d, 2 args after $0, and fd 3", lines, pid)
			}
			mask, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(lines[1], "SigIgn:")), 16, 64)
			if err != nil || mask&(1<<(syscall.SIGHUP-1)) == 0 {
				t.Errorf("worker's %s: want SIGHUP ignored, as mworker found it", lines[1])
			}
		})
	}
}
