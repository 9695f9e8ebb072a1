// Stoptime measures how long a supervisor takes to stop: it starts
// COMMAND, waits until the supervisor has a child named "sleep" (the
// worker), sends SIGTERM to the supervisor and times from the kill to the
// moment wait returns for it, which is after the supervisor has passed the
// signal on, its worker has died and it has reaped the worker and exited.
//
// Usage:
//
//	stoptime [-settle D] [-timeout D] -- COMMAND [ARG...]
//
// It prints one line: the latency in microseconds and the supervisor's
// exit status, e.g. "1234 143". Times come from Go's monotonic clock
// (CLOCK_MONOTONIC), so a wall-clock step cannot skew them. bench/stop.sh
// calls it once per round, alternating the supervisors.
//
// The worker is found through /proc/PID/task/*/children, which lists the
// children of every thread of the supervisor (mworker forks from a thread
// of its own); its name is read from /proc/CHILD/comm, so a worker that is
// still the trampoline before its exec does not count.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	settle := flag.Duration("settle", 100*time.Millisecond, "wait this long after the worker appears, so the supervisor is idle when the signal comes")
	timeout := flag.Duration("timeout", 10*time.Second, "give up (and SIGKILL) after this long, both for the start and for the stop")
	worker := flag.String("worker", "sleep", "name (comm) of the worker process to wait for")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "stoptime: no command: use stoptime [flags] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	us, status, err := measure(flag.Args(), *worker, *settle, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "stoptime:", err)
		os.Exit(1)
	}
	fmt.Println(us, status)
}

func measure(argv []string, worker string, settle, timeout time.Duration) (int64, int, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = nil // discard: tini warns that it is not PID 1
	if err := cmd.Start(); err != nil {
		return 0, 0, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	deadline := time.Now().Add(timeout)
	for !hasChild(pid, worker) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return 0, 0, fmt.Errorf("%s has no %q child after %v", argv[0], worker, timeout)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(settle)

	done := make(chan error, 1)
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return 0, 0, fmt.Errorf("kill %d: %w", pid, err)
	}
	go func() { done <- cmd.Wait() }()
	var werr error
	select {
	case werr = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return 0, 0, fmt.Errorf("%s still running %v after SIGTERM", argv[0], timeout)
	}
	elapsed := time.Since(start)
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) {
		return 0, 0, fmt.Errorf("wait %s: %w", argv[0], werr)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	status := ws.ExitStatus()
	if ws.Signaled() {
		status = 128 + int(ws.Signal())
	}
	return elapsed.Microseconds(), status, nil
}

// hasChild reports whether any thread of pid has a child whose comm is name.
func hasChild(pid int, name string) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			if _, err := strconv.Atoi(c); err != nil {
				continue
			}
			comm, err := os.ReadFile("/proc/" + c + "/comm")
			if err == nil && strings.TrimSpace(string(comm)) == name {
				return true
			}
		}
	}
	return false
}
