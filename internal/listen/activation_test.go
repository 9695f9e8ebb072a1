package listen

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// startWorker starts the test binary in mode the way the master starts a
// worker: WorkerFiles as its descriptors (stdout replaced by a pipe) and
// WorkerEnv in its environment. The child stands in for the trampoline
// and sets LISTEN_PID itself.
func startWorker(t *testing.T, mode string, ls []Listener) (pid int, out *os.File) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	t.Cleanup(func() { r.Close() })
	files := WorkerFiles(ls)
	files[1] = w.Fd()
	var env []string
	for _, kv := range os.Environ() {
		if !IsActivationVar(kv) && !strings.HasPrefix(kv, envChild+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, WorkerEnv(Names(ls))...)
	env = append(env, envChild+"="+mode)
	pid, err = syscall.ForkExec(exe, []string{exe, "-test.run=^$"}, &syscall.ProcAttr{Env: env, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return pid, r
}

func waitExit(t *testing.T, pid int) {
	t.Helper()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err != nil {
		t.Fatal(err)
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Fatalf("child %d ended with %v (exit %d, signal %v)", pid, ws, ws.ExitStatus(), ws.Signal())
	}
}

func TestActivatedAdoptsPassedSockets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.sock")
	ls := mustBind(t, "web=127.0.0.1:0", "unix://"+path)
	// systemd's NonBlocking=yes: the worker must get the flag unchanged.
	if err := unix.SetNonblock(int(ls[1].File.Fd()), true); err != nil {
		t.Fatal(err)
	}
	pid, out := startWorker(t, "activated", ls)
	lines := childLines(t, out)
	want := []string{
		"web tcp " + ls[0].Address + " fd=3 cloexec=true nonblock=false",
		path + " unix " + path + " fd=4 cloexec=true nonblock=true",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("child adopted\n%q\nwant\n%q", lines, want)
	}
	if got := dialRead(t, "tcp", ls[0].Address); got != "web" {
		t.Errorf("tcp answered %q", got)
	}
	if got := dialRead(t, "unix", path); got != path {
		t.Errorf("unix answered %q", got)
	}
	waitExit(t, pid)
}

func TestActivatedIgnoresAnotherPid(t *testing.T) {
	ls := mustBind(t, "web=127.0.0.1:0")
	pid, out := startWorker(t, "activated-other-pid", ls)
	if lines := childLines(t, out); len(lines) != 0 {
		t.Errorf("child adopted %q though LISTEN_PID was not its pid", lines)
	}
	waitExit(t, pid) // the child also checked that LISTEN_* were unset
}

func TestAdoptActivatedRejects(t *testing.T) {
	tests := []struct {
		fds, names string
		namesSet   bool
		want       string
	}{
		{"two", "", false, `LISTEN_FDS="two" is not a count`},
		{"-1", "", false, `LISTEN_FDS="-1" is not a count`},
		{"2", "a", true, `LISTEN_FDNAMES="a" names 1 descriptors but LISTEN_FDS=2`},
		{"1", "a:b", true, `names 2 descriptors but LISTEN_FDS=1`},
	}
	for _, tt := range tests {
		ls, err := adoptActivated(tt.fds, tt.names, tt.namesSet)
		if err == nil || !strings.HasPrefix(err.Error(), "listen: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("adoptActivated(%q, %q) = %v, %v; want %q", tt.fds, tt.names, ls, err, tt.want)
		}
	}
	if ls, err := adoptActivated("0", "", false); ls != nil || err != nil {
		t.Errorf("LISTEN_FDS=0 gave %v, %v; want nothing", ls, err)
	}
}

func TestWorkerEnvAndFiles(t *testing.T) {
	if env := WorkerEnv(nil); env != nil {
		t.Errorf("WorkerEnv(nil) = %q, want none", env)
	}
	env := WorkerEnv([]string{"web", "/run/app.sock"})
	if want := []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:/run/app.sock"}; !slices.Equal(env, want) {
		t.Errorf("WorkerEnv = %q, want %q", env, want)
	}
	ls := mustBind(t, "a=127.0.0.1:0", "b=127.0.0.1:0")
	files := WorkerFiles(ls)
	if want := []uintptr{0, 1, 2, ls[0].File.Fd(), ls[1].File.Fd()}; !slices.Equal(files, want) {
		t.Errorf("WorkerFiles = %v, want %v", files, want)
	}
	for kv, want := range map[string]bool{
		"LISTEN_FDS=1": true, "LISTEN_PID=7": true, "LISTEN_FDNAMES=a": true,
		EnvInherited + "=3=a": true, "LISTEN_FDSX=1": false, "NOTIFY_SOCKET=/x": false, "PATH=/bin": false,
	} {
		if got := IsActivationVar(kv); got != want {
			t.Errorf("IsActivationVar(%q) = %v, want %v", kv, got, want)
		}
	}
}
