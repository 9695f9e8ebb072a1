package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// envSigExec makes the test binary a launcher: it sets the signal
// dispositions and mask given there ("ign=11,3;blk=4,15") and executes its
// arguments, as a shell or a C program would start mworker with them.
// exec.Cmd cannot give a child a signal mask or a SIG_IGN of SIGSEGV, and
// no shell sets SIGSEGV to SIG_IGN.
const envSigExec = "MWORKER_TEST_SIGEXEC"

func init() {
	spec, ok := os.LookupEnv(envSigExec)
	if !ok {
		return
	}
	// Package initialization runs on the main thread, locked to it: the
	// mask set here is the one execve keeps.
	runtime.LockOSThread()
	ign, blk, err := parseSigExec(spec)
	if err == nil {
		err = sigExec(ign, blk, os.Args[1:])
	}
	fmt.Fprintln(os.Stderr, "sigexec:", err)
	os.Exit(126)
}

// parseSigExec reads "ign=A,B;blk=C,D" into two signal sets.
func parseSigExec(spec string) (ign, blk uint64, err error) {
	for _, part := range strings.Split(spec, ";") {
		name, list, _ := strings.Cut(part, "=")
		var set uint64
		for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' }) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 64 {
				return 0, 0, fmt.Errorf("bad signal %q in %q", f, spec)
			}
			set |= 1 << (n - 1)
		}
		switch name {
		case "ign":
			ign = set
		case "blk":
			blk = set
		default:
			return 0, 0, fmt.Errorf("bad part %q in %q", part, spec)
		}
	}
	return ign, blk, nil
}

func sigExec(ign, blk uint64, argv []string) error {
	// Exactly ign at SIG_IGN: the others that are (inherited by this
	// test) go back to SIG_DFL; the runtime's handlers end with execve.
	for sig := 1; sig <= 64; sig++ {
		if sig == int(syscall.SIGKILL) || sig == int(syscall.SIGSTOP) {
			continue
		}
		var old [4]uint64
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			return fmt.Errorf("read signal %d: %v", sig, e)
		}
		var sa [4]uint64 // SIG_DFL
		if ign&(1<<(sig-1)) != 0 {
			sa[0] = 1 // SIG_IGN
		} else if old[0] != 1 {
			continue
		}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
			return fmt.Errorf("set signal %d: %v", sig, e)
		}
	}
	mask := unix.Sigset_t{Val: [16]uint64{blk}}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &mask, nil); err != nil {
		return err
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envSigExec+"=") {
			env = append(env, kv)
		}
	}
	return syscall.Exec(argv[0], argv, env)
}

// sigSet is the "SigIgn:"/"SigBlk:" form of /proc/PID/status.
func sigSet(sigs ...syscall.Signal) string {
	var set uint64
	for _, s := range sigs {
		set |= 1 << (s - 1)
	}
	return fmt.Sprintf("%016x", set)
}

func sigList(sigs []syscall.Signal) string {
	var b []string
	for _, s := range sigs {
		b = append(b, strconv.Itoa(int(s)))
	}
	return strings.Join(b, ",")
}

// A worker inherits exactly the signals mworker was started with ignored
// and blocked (those the Go runtime takes over before any of mworker's
// code runs included: SIGSEGV, SIGQUIT, SIGILL, SIGTERM), from the first
// image and after a re-exec, through each way a worker starts: the
// self-exec trampoline (SIGSEGV ignored: no shell can set it), the shell
// one, and a plain fork. And the master does not keep the directory it was
// started in: its cwd is "/" once started and again after the re-exec,
// while the workers start in that directory; the relative --pidfile,
// --control and command are read from it, and removed from it at the exit.
func TestWorkersInheritSignalsAndDirectory(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		ign, blk []syscall.Signal
	}{
		{"self-exec trampoline", []syscall.Signal{syscall.SIGQUIT, syscall.SIGSEGV, syscall.SIGPIPE, 40}, []syscall.Signal{syscall.SIGILL, syscall.SIGUSR2, syscall.SIGTERM, 50}},
		{"shell trampoline", []syscall.Signal{syscall.SIGQUIT, syscall.SIGPIPE, 40}, []syscall.Signal{syscall.SIGILL, syscall.SIGTERM}},
		{"plain fork", nil, []syscall.Signal{syscall.SIGILL, syscall.SIGSEGV, syscall.SIGTERM, syscall.SIGCHLD}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testInherit(t, tt.ign, tt.blk)
		})
	}
}

func testInherit(t *testing.T, ign, blk []syscall.Signal) {
	bin := mworkerBinary(t)
	dir := t.TempDir()
	// The worker reports its working directory and becomes a sleep, whose
	// mask and dispositions are read from /proc: a shell changes its own
	// mask while it waits for a child, and gives the one it started with
	// to a command it executes.
	script := "#!/bin/sh\n" + workerScript + `pwd -P > "$d/cwd.$$"
announce
exec sleep 60
`
	if err := e2etest.WriteExecutable(filepath.Join(dir, "worker.sh"), script); err != nil {
		t.Fatal(err)
	}
	m := &master{t: t, dir: dir, log: filepath.Join(dir, "master.log")}
	logf, err := os.Create(m.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], bin, "run", "--restart", "no", "--stop-timeout", "1s", "--reexec", "always",
		"--pidfile", "m.pid", "--control", "m.sock", "--", "./worker.sh", dir)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envSigExec+"=ign="+sigList(ign)+";blk="+sigList(blk))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.cmd, m.pid, m.done = cmd, cmd.Process.Pid, make(chan struct{})
	m.proc = &e2etest.Process{Cmd: cmd, Pid: m.pid, Done: m.done}
	go func() { cmd.Wait(); close(m.done) }()
	t.Cleanup(m.cleanup)

	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := "SigBlk:" + sigSet(blk...) + " SigIgn:" + sigSet(ign...)
	check := func(when string, pid int) {
		t.Helper()
		t.Cleanup(func() { syscall.Kill(-pid, syscall.SIGKILL) })
		var got string
		e2etest.WaitFor(t, exitTimeout, "the worker to execute sleep", func() bool {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			return string(comm) == "sleep\n"
		})
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "SigBlk:") || strings.HasPrefix(line, "SigIgn:") {
				got += strings.ReplaceAll(line, "\t", "") + " "
			}
		}
		if strings.TrimSpace(got) != want {
			t.Errorf("%s: worker %d has %q, want %q: mworker was started with %v ignored and %v blocked", when, pid, got, want, ign, blk)
		}
		if cwd := m.file("cwd", pid); cwd != realDir {
			t.Errorf("%s: worker %d runs in %q, want %q, where mworker was started", when, pid, cwd, realDir)
		}
		var cwd string
		if !e2etest.Poll(exitTimeout, func() bool { cwd, _ = os.Readlink(fmt.Sprintf("/proc/%d/cwd", m.pid)); return cwd == "/" }) {
			t.Errorf("%s: the master's working directory is %q, want /", when, cwd)
		}
	}
	old := m.waitWorkers(1)
	check("first start", old[0])
	for _, f := range []string{"m.pid", "m.sock"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("relative --pidfile or --control not created where mworker was started: %v", err)
		}
	}
	m.signal(syscall.SIGHUP)
	fresh := m.waitReplaced(old, 1)
	check("after a re-exec", fresh[0])

	m.signal(syscall.SIGINT)
	m.wait(exitTimeout)
	for _, f := range []string{"m.pid", "m.sock"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s left behind at the exit: the master removed it from the wrong directory", f)
		}
	}
}
