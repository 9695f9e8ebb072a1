// Reaptime measures how fast a supervisor reaps orphans. It runs
// SUPERVISOR with a worker (this program again, in worker mode) that
// leaves N orphans behind, lets them all exit at the same moment, and
// times how long the supervisor takes to reap them.
//
// Usage:
//
//	reaptime [-n N] [-series FILE] -- SUPERVISOR [ARG...]
//
// The worker command is appended to SUPERVISOR's arguments, so that
// "-- mworker run --" runs "mworker run -- reaptime -worker ...". The
// supervisor must reap orphans: be a subreaper (mworker is; tini with -s).
//
// How:
//
//  1. Two FIFOs: "hold", which this program keeps open for writing, and
//     "exit", which it keeps open for reading.
//  2. The worker forks a spawner and waits for it; the spawner forks N
//     cat processes, each reading "hold" and writing "exit", then exits.
//     The cats are orphans now, and the kernel hands them to the nearest
//     subreaper: the supervisor. The worker stays alive, idle.
//  3. Once the supervisor has N+1 children, this program closes "hold":
//     every cat reads end-of-file and exits. (t0)
//  4. It reads "exit" until end-of-file, which comes when the last cat
//     has closed its descriptors, that is has exited. (exited)
//  5. It polls the supervisor's children lists until only the worker is
//     left: every zombie is reaped. (reaped)
//
// It prints one line: N, exited-t0 and reaped-t0 in milliseconds, and the
// reaping lag reaped-exited. With -series it writes the number of
// children left, every poll, as "ms<TAB>children".
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	worker := flag.Bool("worker", false, "internal: run as the worker")
	spawner := flag.Bool("spawner", false, "internal: run as the spawner")
	n := flag.Int("n", 10000, "orphans")
	hold := flag.String("hold", "", "internal: the hold FIFO")
	exit := flag.String("exit", "", "internal: the exit FIFO")
	series := flag.String("series", "", "write children left over time to this file")
	timeout := flag.Duration("timeout", 120*time.Second, "give up after this long at each stage")
	flag.Parse()
	var err error
	switch {
	case *spawner:
		err = spawn(*n, *hold, *exit)
	case *worker:
		err = runWorker(*n, *hold, *exit)
	default:
		err = measure(*n, *series, *timeout, flag.Args())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "reaptime:", err)
		os.Exit(1)
	}
}

// runWorker forks the spawner, waits for it, and idles until it is killed.
func runWorker(n int, hold, exit string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := []string{self, "-spawner", "-n", fmt.Sprint(n), "-hold", hold, "-exit", exit}
	pid, err := syscall.ForkExec(self, argv, &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{0, 1, 2}})
	if err != nil {
		return fmt.Errorf("start the spawner: %w", err)
	}
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil || ws.ExitStatus() != 0 {
		return fmt.Errorf("spawner failed: %v, status %d", err, ws.ExitStatus())
	}
	for {
		time.Sleep(time.Hour)
	}
}

// spawn forks n cats reading hold and writing exit, and returns.
func spawn(n int, hold, exit string) error {
	in, err := os.OpenFile(hold, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	out, err := os.OpenFile(exit, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	cat, err := exec.LookPath("cat")
	if err != nil {
		return err
	}
	attr := &syscall.ProcAttr{Files: []uintptr{in.Fd(), out.Fd(), 2}}
	for i := range n {
		if _, err := syscall.ForkExec(cat, []string{"cat"}, attr); err != nil {
			return fmt.Errorf("orphan %d: %w", i, err)
		}
	}
	return nil
}

func measure(n int, series string, timeout time.Duration, sup []string) error {
	if len(sup) == 0 {
		return fmt.Errorf("no supervisor: use reaptime [flags] -- SUPERVISOR [ARG...]")
	}
	dir, err := os.MkdirTemp("", "reaptime")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	holdPath, exitPath := filepath.Join(dir, "hold"), filepath.Join(dir, "exit")
	for _, p := range []string{holdPath, exitPath} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			return err
		}
	}
	// O_RDWR opens a FIFO without waiting for a reader; O_NONBLOCK
	// opens the reading end without waiting for a writer.
	holdW, err := os.OpenFile(holdPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	exitFd, err := syscall.Open(exitPath, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append(append([]string{}, sup...), self, "-worker", "-n", fmt.Sprint(n), "-hold", holdPath, "-exit", exitPath)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	defer stop()
	sp := cmd.Process.Pid

	deadline := time.Now().Add(timeout)
	for len(children(sp)) < n+1 {
		select {
		case <-done:
			return fmt.Errorf("%s exited before its worker had left %d orphans", sup[0], n)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s has %d children after %v, want %d", sup[0], len(children(sp)), timeout, n+1)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the supervisor settle after reaping the spawner
	kids := children(sp)
	if len(kids) != n+1 {
		return fmt.Errorf("%s has %d children, want %d", sup[0], len(kids), n+1)
	}

	// Make the exit FIFO blocking now that every cat holds it open.
	if err := syscall.SetNonblock(exitFd, false); err != nil {
		return err
	}
	exited := make(chan time.Time, 1)
	go func() {
		f := os.NewFile(uintptr(exitFd), "exit")
		io.Copy(io.Discard, f)
		exited <- time.Now()
	}()

	var samples []string
	t0 := time.Now()
	holdW.Close()
	var tExit time.Time
	for {
		left := len(children(sp)) - 1
		samples = append(samples, fmt.Sprintf("%.1f\t%d", float64(time.Since(t0).Microseconds())/1000, left))
		if left <= 0 {
			break
		}
		if time.Since(t0) > timeout {
			return fmt.Errorf("%s still has %d orphans %v after they were told to exit", sup[0], left, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	reaped := time.Now()
	select {
	case tExit = <-exited:
	case <-time.After(timeout):
		return fmt.Errorf("the exit FIFO never saw end-of-file")
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	fmt.Printf("%d\t%.1f\t%.1f\t%.1f\n", n, ms(tExit.Sub(t0)), ms(reaped.Sub(t0)), ms(reaped.Sub(tExit)))
	if series != "" {
		if err := os.WriteFile(series, []byte(strings.Join(samples, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// children lists the children of every thread of pid, zombies included.
func children(pid int) []string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var all []string
	for _, f := range tasks {
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(fh)
		sc.Split(bufio.ScanWords)
		for sc.Scan() {
			all = append(all, sc.Text())
		}
		fh.Close()
	}
	return all
}
