package osadapter

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/fsm"
)

// The trampoline starts a worker when the master cannot prepare its process
// from the parent: LISTEN_PID and WATCHDOG_PID must be the worker's own
// pid, which is only known after the fork, and an inherited SIG_IGN of
// SIGHUP or SIGINT must be given back, which Go's ForkExec resets. The forked child executes the
// master's own image with envTrampoline set; runTrampoline, called before
// anything else in this package, sees it, finishes the job and executes the
// real command in the same process.
//
// Where a POSIX shell exists, shellTrampoline does the same job at a
// fraction of the cost: a shell starts in about 1 ms, the mworker binary in
// 4 to 5 (docs/performance.md).
//
// envTrampoline holds "ign=<sig>,<sig>;mask=<hex>;path=<command path>";
// path comes last because it may contain any byte but NUL.
const envTrampoline = "MWORKER_TRAMPOLINE"

func trampolineSpec(path string, ignored []syscall.Signal, mask uint64) string {
	var b strings.Builder
	b.WriteString("ign=")
	for i, s := range ignored {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(s)))
	}
	b.WriteString(";mask=")
	b.WriteString(strconv.FormatUint(mask, 16))
	b.WriteString(";path=")
	b.WriteString(path)
	return b.String()
}

func parseTrampolineSpec(spec string) (path string, ignored []syscall.Signal, mask uint64, err error) {
	bad := fmt.Errorf("osadapter: malformed %s %q", envTrampoline, spec)
	head, path, ok := strings.Cut(spec, ";path=")
	ign, m, ok2 := strings.Cut(head, ";mask=")
	if !ok || !ok2 || !strings.HasPrefix(ign, "ign=") || path == "" {
		return "", nil, 0, bad
	}
	if mask, err = strconv.ParseUint(m, 16, 64); err != nil {
		return "", nil, 0, bad
	}
	if ign = strings.TrimPrefix(ign, "ign="); ign != "" {
		for _, f := range strings.Split(ign, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 64 {
				return "", nil, 0, bad
			}
			ignored = append(ignored, syscall.Signal(n))
		}
	}
	return path, ignored, mask, nil
}

// runTrampoline executes the worker's command when this process is a
// trampoline, and returns at once otherwise.
func runTrampoline() {
	spec, ok := syscall.Getenv(envTrampoline)
	if !ok {
		return
	}
	path, ignored, mask, err := parseTrampolineSpec(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := trampolineEnv(syscall.Environ(), os.Getpid())
	// This image's runtime has unblocked the signals it needs and set its
	// handlers: the start mask and SIG_IGN go back on the thread that
	// executes (package initialization runs on the main thread, locked to
	// it), last.
	if err := setIgnored(ignored); err != nil {
		fmt.Fprintf(os.Stderr, "osadapter: %v\n", err)
		os.Exit(126)
	}
	set := unix.Sigset_t{Val: [16]uint64{mask}}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &set, nil); err != nil {
		fmt.Fprintf(os.Stderr, "osadapter: set the signal mask: %v\n", err)
		os.Exit(126)
	}
	err = syscall.Exec(path, os.Args, env)
	fmt.Fprintf(os.Stderr, "osadapter: cannot execute worker %s: %v\n", path, err)
	if err == syscall.ENOENT {
		os.Exit(127)
	}
	os.Exit(126)
}

// trampolineEnv is the worker's final environment: the trampoline's own
// variable removed, LISTEN_PID set to pid when listeners are passed, and
// WATCHDOG_PID set to pid when a watchdog is (WATCHDOG_USEC, which only
// --watchdog puts in a worker's environment).
func trampolineEnv(env []string, pid int) []string {
	out := make([]string, 0, len(env)+2)
	listen, watchdog := false, false
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case envTrampoline, "LISTEN_PID", envWatchdogPid:
			continue
		case "LISTEN_FDS":
			listen = true
		case envWatchdogUsec:
			watchdog = true
		}
		out = append(out, kv)
	}
	if listen {
		out = append(out, "LISTEN_PID="+strconv.Itoa(pid))
	}
	if watchdog {
		out = append(out, envWatchdogPid+"="+strconv.Itoa(pid))
	}
	return out
}

// shellCanIgnore says whether the shell can set each of sigs to SIG_IGN
// (trap with an empty action): dash refuses SIGSEGV, SIGCHLD, 32 and 33 without a word.
func shellCanIgnore(sigs []syscall.Signal) bool {
	for _, s := range sigs {
		switch s {
		case syscall.SIGSEGV, syscall.SIGCHLD, 32, 33:
			return false
		}
	}
	return true
}

// shellTrampoline returns the argv that makes shell start the worker: give
// back the inherited SIG_IGN dispositions (a trap of ” is inherited across
// exec as SIG_IGN), set LISTEN_PID to its own pid ($$, which the command
// keeps across the exec) when listeners are passed, and WATCHDOG_PID with
// a watchdog, and exec the command with its own argv ("$0" is command[0],
// "$@" the rest).
func shellTrampoline(shell string, command []string, ignored []syscall.Signal, listen, watchdog bool) (string, []string) {
	var b strings.Builder
	if len(ignored) > 0 {
		b.WriteString("trap ''")
		for _, s := range ignored {
			if s >= 32 {
				b.WriteString(" " + strconv.Itoa(int(s)))
			} else {
				b.WriteString(" " + fsm.Signal(s).String())
			}
		}
		b.WriteString("; ")
	}
	if listen {
		b.WriteString("LISTEN_PID=$$; export LISTEN_PID; ")
	}
	if watchdog {
		b.WriteString("WATCHDOG_PID=$$; export WATCHDOG_PID; ")
	}
	b.WriteString(`exec "$0" "$@"`)
	return shell, append([]string{"sh", "-c", b.String()}, command...)
}
