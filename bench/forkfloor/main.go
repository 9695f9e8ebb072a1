// Forkfloor measures the floor under a reload: the time a Go process takes
// to fork and exec N bare workers, one after the other, each in its own
// process group as mworker starts them. syscall.ForkExec returns once the
// child has exec'd (or failed to), so the time covers N complete
// fork+exec. The workers are then killed and reaped, outside the timing.
//
// Usage:
//
//	forkfloor [-n N] [-rounds R] [-- COMMAND [ARG...]]
//
// COMMAND defaults to "sleep 1000". It prints one line per round: the
// time in microseconds (Go's monotonic clock).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 4, "workers to fork and exec per round")
	rounds := flag.Int("rounds", 15, "rounds")
	flag.Parse()
	argv := flag.Args()
	if len(argv) == 0 {
		argv = []string{"sleep", "1000"}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "forkfloor: %v\n", err)
		os.Exit(1)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintf(os.Stderr, "forkfloor: %v\n", err)
		os.Exit(1)
	}
	attr := &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{devnull.Fd(), os.Stdout.Fd(), os.Stderr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	pids := make([]int, 0, *n)
	for range *rounds {
		pids = pids[:0]
		start := time.Now()
		for range *n {
			pid, err := syscall.ForkExec(path, argv, attr)
			if err != nil {
				fmt.Fprintf(os.Stderr, "forkfloor: fork/exec %s: %v\n", path, err)
				reap(pids)
				os.Exit(1)
			}
			pids = append(pids, pid)
		}
		elapsed := time.Since(start)
		reap(pids)
		fmt.Println(elapsed.Microseconds())
	}
}

// reap kills the given children and waits for each.
func reap(pids []int) {
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range pids {
		var ws syscall.WaitStatus
		for {
			_, err := syscall.Wait4(pid, &ws, 0, nil)
			if err != syscall.EINTR {
				break
			}
		}
	}
}
