// Gostop is the least a Go supervisor can do, as a baseline for
// bench/stop.sh: it starts one worker with syscall.ForkExec in its own
// process group, and on SIGTERM passes it to that group, reaps the worker
// with wait4 and exits with 128 + the signal (or the worker's code). Its
// stop latency against mworker's shows how much of mworker's comes from
// the Go runtime (signal delivery through a goroutine, several threads to
// end at exit) rather than from what mworker does.
//
// Usage:
//
//	gostop [-lock] -- COMMAND [ARG...]
//
// With -lock the main goroutine is locked to its thread, as mworker's
// loop is (it forks every worker from one thread), so every signal is
// handed from the runtime's signal goroutine to that thread.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
)

func main() {
	lock := flag.Bool("lock", false, "lock the main goroutine to its thread, as mworker does")
	flag.Parse()
	if *lock {
		runtime.LockOSThread()
	}
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "gostop: no command: use gostop [-lock] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	path, err := exec.LookPath(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "gostop:", err)
		os.Exit(127)
	}
	pid, err := syscall.ForkExec(path, flag.Args(), &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gostop:", err)
		os.Exit(126)
	}
	for s := range sigs {
		if s != syscall.SIGCHLD {
			syscall.Kill(-pid, s.(syscall.Signal))
			continue
		}
		for {
			var ws syscall.WaitStatus
			got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || got <= 0 {
				break
			}
			if got == pid {
				if ws.Signaled() {
					os.Exit(128 + int(ws.Signal()))
				}
				os.Exit(ws.ExitStatus())
			}
		}
	}
}
