package osadapter

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

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
// envTrampoline holds "ign=<sig>,<sig>;path=<command path>"; path comes last
// because it may contain any byte but NUL.
const envTrampoline = "MWORKER_TRAMPOLINE"

func trampolineSpec(path string, ignored []syscall.Signal) string {
	var b strings.Builder
	b.WriteString("ign=")
	for i, s := range ignored {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(s)))
	}
	b.WriteString(";path=")
	b.WriteString(path)
	return b.String()
}

func parseTrampolineSpec(spec string) (path string, ignored []syscall.Signal, err error) {
	ign, path, ok := strings.Cut(spec, ";path=")
	if !ok || !strings.HasPrefix(ign, "ign=") || path == "" {
		return "", nil, fmt.Errorf("osadapter: malformed %s %q", envTrampoline, spec)
	}
	if ign = strings.TrimPrefix(ign, "ign="); ign != "" {
		for _, f := range strings.Split(ign, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 64 {
				return "", nil, fmt.Errorf("osadapter: malformed %s %q", envTrampoline, spec)
			}
			ignored = append(ignored, syscall.Signal(n))
		}
	}
	return path, ignored, nil
}

// runTrampoline executes the worker's command when this process is a
// trampoline, and returns at once otherwise.
func runTrampoline() {
	spec, ok := syscall.Getenv(envTrampoline)
	if !ok {
		return
	}
	path, ignored, err := parseTrampolineSpec(spec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	env := trampolineEnv(syscall.Environ(), os.Getpid())
	for _, s := range ignored {
		signal.Ignore(s)
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
			b.WriteString(" " + fsm.Signal(s).String())
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
