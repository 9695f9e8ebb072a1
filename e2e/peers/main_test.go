// Package peers runs the test cases of tini's and dumb-init's own suites
// (tini's test/run_inner_tests.py and its stages, dumb-init's tests/*.py
// and tests/test-zombies) against "mworker run --restart no --stop-timeout
// 3s [options] -- CMD", and, when they are on PATH, against tini and
// dumb-init themselves, so that docs/peers.md and the peer columns of
// docs/signals.md say what each really does. Each case is a row of the
// table in cases_test.go: either mworker does what the peer's own test
// asserts, or the row names a design choice and the test asserts mworker's
// documented alternative. The cases were read from the peers' suites and
// written anew here, in Go and sh.
package peers

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// mworkerPath is the binary under test, built by TestMain as a release is.
var mworkerPath string

// moduleRoot is the module's directory, found by TestMain before the
// orphan reaper runs (the reaper may take any child not started by exec
// in this package: no test may run "go env" then).
var moduleRoot string

// recorderPath is the recorder script, written once before any test runs
// (a file written while a parallel test forks could be executed with
// ETXTBSY).
var recorderPath string

// selfPath is this test binary, which doubles as the launcher (see init).
var selfPath string

// envLaunch makes this test binary a launcher: it sets the signal
// dispositions and mask given there ("ign=11,3;blk=4,15": exactly those
// ignored, exactly those blocked, every other signal at its default) and
// executes its arguments. Every supervisor under test starts through it, so
// that a run does not depend on what the caller of "go test" ignored (a
// shell's background job has SIGINT and SIGQUIT ignored, and a shell cannot
// trap a signal ignored at its start); tini's sigconf case gives it its own
// sets. exec.Cmd can neither block a signal in the child nor ignore SIGSEGV.
const envLaunch = "PEERS_LAUNCH"

func init() {
	spec, ok := os.LookupEnv(envLaunch)
	if !ok {
		return
	}
	// Package initialization runs on the main thread, locked to it: the
	// mask set here is the one execve keeps.
	runtime.LockOSThread()
	err := launch(spec, os.Args[1:])
	fmt.Fprintln(os.Stderr, "peers launcher:", err)
	os.Exit(126)
}

// launch sets the dispositions and the mask spec names and executes argv.
func launch(spec string, argv []string) error {
	sets := map[string]uint64{}
	for part := range strings.SplitSeq(spec, ";") {
		name, list, _ := strings.Cut(part, "=")
		for f := range strings.SplitSeq(list, ",") {
			if f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 64 {
				return fmt.Errorf("bad signal %q in %q", f, spec)
			}
			sets[name] |= 1 << (n - 1)
		}
	}
	for sig := 1; sig <= 64; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		// The kernel's struct sigaction: handler, flags, restorer, mask.
		// Zero is SIG_DFL with nothing else; 1 in the handler is SIG_IGN.
		var sa [4]uint64
		if sets["ign"]&(1<<(sig-1)) != 0 {
			sa[0] = 1
		}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
			return fmt.Errorf("rt_sigaction %d: %v", sig, e)
		}
	}
	mask := unix.Sigset_t{Val: [16]uint64{sets["blk"]}}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &mask, nil); err != nil {
		return err
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envLaunch+"=") {
			env = append(env, kv)
		}
	}
	return syscall.Exec(path, argv, env)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mworker-peers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.Exit(1)
	}
	selfPath, err = os.Executable()
	if err == nil {
		moduleRoot, err = e2etest.ModuleRoot()
	}
	if err == nil {
		mworkerPath, err = e2etest.BuildRelease(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// Most cases wait on processes rather than use the CPU: run more of
	// them at once than the default -parallel (GOMAXPROCS, 2 on the CI
	// machine), unless -parallel was given.
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", "8")
	}
	if err := adoptOrphans(); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	recorderPath = filepath.Join(dir, "recorder")
	if err := os.WriteFile(recorderPath, []byte("#!/bin/sh\n"+recorder), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The test process is a subreaper: what tini and dumb-init (not PID 1
// here, and not subreapers by default) orphan, and what is left of a
// killed master, comes to it instead of to the machine's init, which may
// not reap (a zombie would stay). started holds the pids this process
// started itself, which their exec.Cmd reaps; the reaper reaps every
// other zombie child. exec holds startMu for reading from Start to the
// registration, so that the reaper never takes a child whose Wait is due.
var (
	startMu sync.RWMutex
	started sync.Map // pid → true
)

func adoptOrphans() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	go func() {
		for {
			time.Sleep(50 * time.Millisecond)
			reapAdopted()
		}
	}()
	return nil
}

func reapAdopted() {
	startMu.Lock()
	defer startMu.Unlock()
	self := os.Getpid()
	for pid, s := range allStats() {
		if _, ours := started.Load(pid); s.ppid == self && s.state == 'Z' && !ours {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}
