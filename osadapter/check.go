package osadapter

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// CheckFlag is the hidden option that turns "mworker run" into a takeover
// check. Before a reload's execve, when the file at its start path is not
// the one it runs from (an upgrade), a master with Config.CheckTakeover
// runs that binary as
//
//	PATH run --check-handover OPTIONS... -- COMMAND...
//
// with the handover in the environment, exactly as the new image would get
// it. A binary that accepts the command line and the handover exits 0 and
// the master goes on with the execve; anything else (exit 2 on an option it
// no longer knows, a handover it cannot read, a crash, a binary for another
// machine, no answer within checkTimeout) fails the reload like a failed
// execve: the master keeps its workers and answers the waiting client with
// the reason. Without the check, such a binary would get as far as its own
// argument parsing after the execve and exit, taking every worker with it.
//
// The option comes first so that a binary older than the check refuses it
// as an unknown option, and the reload fails safe.
const CheckFlag = "--check-handover"

// checkTimeout bounds a takeover check; it normally takes a few
// milliseconds (the new binary's start and one decode).
const checkTimeout = 10 * time.Second

// isRunningImage says whether path is the file this process was executed
// from: the same device and inode as /proc/self/exe (which still names the
// running image when the path has been replaced). A running executable
// cannot be opened for writing (ETXTBSY), so the same inode is the same
// program, which takes its own command line and handover: the check is
// for a binary that was replaced, an upgrade.
func isRunningImage(path string) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Stat("/proc/self/exe", &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

// isCheckCommand says whether this image is a takeover check.
func isCheckCommand() bool {
	return len(os.Args) > 2 && os.Args[1] == "run" && os.Args[2] == CheckFlag
}

// checkArgv is the argv of the takeover check for a re-exec with argv.
func checkArgv(argv []string) []string {
	out := make([]string, 0, len(argv)+1)
	out = append(out, argv[:2]...)
	out = append(out, CheckFlag)
	return append(out, argv[2:]...)
}

// CheckHandover is the new binary's side of the takeover check: cfg is its
// parsed command line (without CheckFlag); the handover is read from the
// environment as a resumed master would read it, and a machine is built
// from both. Nothing is adopted, bound, spawned or signalled.
func CheckHandover(cfg Config) error {
	v, ok := os.LookupEnv(envState)
	if !ok {
		return errorf("%s: no handover in the environment (%s); this option is for mworker's own use before a reload", CheckFlag, envState)
	}
	st, err := decodeState(v)
	if err != nil {
		return err
	}
	mc := cfg.Machine
	if mc.Path == "" {
		mc.Path = st.Path
	}
	if mc.Argv == nil {
		mc.Argv = withoutCheckFlag(os.Args)
	}
	h := st.Handover
	mc.Resume = &h
	if _, err := fsm.New(mc); err != nil {
		return errorf("the handover does not fit this command line: %w", err)
	}
	if len(cfg.Command) == 0 {
		return errorf("no worker command: give one after --")
	}
	return nil
}

// withoutCheckFlag is argv as the new image would be started with.
func withoutCheckFlag(argv []string) []string {
	if len(argv) > 2 && argv[2] == CheckFlag {
		return append(append([]string(nil), argv[:2]...), argv[3:]...)
	}
	return argv
}

// runCheck runs path as a takeover check and waits for its verdict: nil
// when it exited 0, else an error with its exit status and the last line
// it printed (the core's message names the path: "cannot execute PATH:
// it refuses to take over ..."). The check's stdout and stderr go to a pipe; stdin is
// /dev/null; it gets its own process group and SIGKILL if the master dies.
func runCheck(path string, argv, env []string, timeout time.Duration) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe for the takeover check: %w", err)
	}
	// Only the reading end is non-blocking (and so has deadlines): the
	// check's stdout and stderr stay ordinary blocking descriptors.
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		unix.Close(p[1])
		return fmt.Errorf("pipe for the takeover check: %w", err)
	}
	r := os.NewFile(uintptr(p[0]), "takeover check")
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(p[1])
		return fmt.Errorf("takeover check: %w", err)
	}
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{null.Fd(), uintptr(p[1]), uintptr(p[1])},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	})
	null.Close()
	unix.Close(p[1])
	if err != nil {
		return fmt.Errorf("takeover check: %w", err)
	}

	out, timedOut := readUntil(r, time.Now().Add(timeout))
	if timedOut {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("takeover check: wait for %s: %w", path, err)
	}
	switch {
	case timedOut:
		return fmt.Errorf("it did not answer the takeover check within %v", timeout)
	case ws.Exited() && ws.ExitStatus() == 0:
		return nil
	}
	why := lastLine(out)
	if why == "" {
		why = "it printed nothing"
	}
	return fmt.Errorf("it refuses to take over (%s): %s", describeStatus(ws), why)
}

// readUntil reads r to its end, keeping the last 4 KiB, until deadline.
func readUntil(r *os.File, deadline time.Time) (string, bool) {
	r.SetReadDeadline(deadline)
	var keep []byte
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		keep = append(keep, buf[:n]...)
		if len(keep) > 4096 {
			keep = keep[len(keep)-4096:]
		}
		if err != nil {
			return string(keep), errors.Is(err, os.ErrDeadlineExceeded)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func describeStatus(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + fsm.Signal(ws.Signal()).String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}
