package container

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

var (
	unshareOnce sync.Once
	unshareArgs []string // unshare's options that make a PID namespace here
	unshareErr  string   // why none can be made; "" if one can
)

// requirePIDNamespace skips the test, with the exact reason, when this
// host cannot make a PID namespace with util-linux's unshare: as root
// with "-fp --mount-proc", otherwise inside a new user namespace that
// maps the caller to root ("-r" added), where the kernel allows it.
func requirePIDNamespace(t *testing.T) {
	t.Helper()
	unshareOnce.Do(func() {
		path, err := exec.LookPath("unshare")
		if err != nil {
			unshareErr = "unshare (util-linux) is not installed: " + err.Error()
			return
		}
		var tried []string
		for _, args := range [][]string{{"-fp", "--mount-proc"}, {"-r", "-fp", "--mount-proc"}} {
			out, err := exec.Command(path, append(args, "true")...).CombinedOutput()
			if err == nil {
				unshareArgs = args
				return
			}
			tried = append(tried, fmt.Sprintf("unshare %s true: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out))))
		}
		unshareErr = strings.Join(tried, "; ")
	})
	if unshareErr != "" {
		t.Skip("cannot make a PID namespace here, so mworker cannot be PID 1: " + unshareErr)
	}
}

// pid1 is an mworker started as PID 1 of a fresh PID namespace, as a
// container runtime starts its ENTRYPOINT.
type pid1 struct {
	unshare *process
	host    int    // mworker's pid in this (the test's) namespace
	proc    string // the namespace's own /proc, seen from here
}

// startPID1 runs "unshare -fp --mount-proc MWORKER ARGS..." and waits
// until that mworker runs there as PID 1.
func startPID1(t *testing.T, env []string, mworker string, args ...string) *pid1 {
	t.Helper()
	requirePIDNamespace(t)
	argv := append(append(append([]string{"unshare"}, unshareArgs...), mworker), args...)
	p := &pid1{unshare: startProcess(t, env, argv...)}
	u := p.unshare.cmd.Process.Pid
	e2etest.WaitFor(t, 10*time.Second, "mworker to start under unshare", func() bool {
		kids := children(u)
		if len(kids) != 1 {
			return false
		}
		st, ok := readStat("/proc", kids[0])
		p.host = kids[0]
		return ok && st.comm == filepath.Base(mworker)
	})
	// --mount-proc mounted the namespace's /proc in mworker's mount
	// namespace; /proc/PID/root reaches it from here.
	p.proc = filepath.Join("/proc", strconv.Itoa(p.host), "root", "proc")
	if ns := nsPid(t, p.host); ns != 1 {
		t.Fatalf("mworker (pid %d here) is pid %d in its namespace, want 1", p.host, ns)
	}
	return p
}

// children lists the children of pid, from every one of its threads
// (an orphan is reparented to one thread of a multithreaded reaper).
func children(pid int) []int {
	files, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, w := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(w); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// nsPid returns the pid that the process pid (in this namespace) has in
// its innermost PID namespace: the last field of NSpid.
func nsPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		t.Fatalf("read status of %d: %v", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(rest)
			n, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				t.Fatalf("NSpid of %d: %q", pid, line)
			}
			return n
		}
	}
	t.Fatalf("no NSpid line in /proc/%d/status", pid)
	return 0
}

// zombies lists the processes in state Z under procRoot.
func zombies(t *testing.T, procRoot string) []int {
	t.Helper()
	var out []int
	for _, pid := range pids(t, procRoot) {
		if st, ok := readStat(procRoot, pid); ok && st.state == 'Z' {
			out = append(out, pid)
		}
	}
	return out
}

// TestPID1ReapsOrphans: a worker leaves 100 orphans behind; the kernel
// hands them to PID 1, which is mworker; once they die, mworker reaps
// every one of them within a second although it never started them.
func TestPID1ReapsOrphans(t *testing.T) {
	const orphans = 100
	// Each "( sleep & )" is a subshell that starts sleep and exits at
	// once: the classic double fork.
	script := `i=0; while [ $i -lt ` + strconv.Itoa(orphans) + ` ]; do (sleep 1000 &); i=$((i+1)); done; exec sleep 100000`
	m := startPID1(t, nil, mworkerPath, "run", "--restart", "no", "--", "sh", "-c", script)

	isOrphan := func(procRoot string, pid int) bool {
		return slices.Equal(cmdline(procRoot, pid), []string{"sleep", "1000"})
	}
	// Seen from inside the namespace, every orphan's parent is pid 1.
	e2etest.WaitFor(t, 20*time.Second, strconv.Itoa(orphans)+" orphans reparented to pid 1 in the namespace", func() bool {
		n := 0
		for _, pid := range pids(t, m.proc) {
			if st, ok := readStat(m.proc, pid); ok && st.ppid == 1 && st.state != 'Z' && isOrphan(m.proc, pid) {
				n++
			}
		}
		return n == orphans
	})
	// Seen from here, they are mworker's children: kill them by these pids.
	var hostPids []int
	for _, pid := range children(m.host) {
		if isOrphan("/proc", pid) {
			hostPids = append(hostPids, pid)
		}
	}
	if len(hostPids) != orphans {
		t.Fatalf("mworker (pid %d) has %d orphan children here, want %d", m.host, len(hostPids), orphans)
	}

	began := time.Now()
	for _, pid := range hostPids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill orphan %d: %v", pid, err)
		}
	}
	e2etest.WaitFor(t, time.Second, "0 zombies and every orphan reaped within 1s of their death", func() bool {
		for _, pid := range hostPids {
			if _, alive := readStat("/proc", pid); alive {
				return false
			}
		}
		return len(zombies(t, m.proc)) == 0
	})
	t.Logf("%d orphans killed; all reaped, 0 zombies in the namespace, %v later", orphans, time.Since(began).Round(time.Microsecond))

	// The worker (sleep, no handler) dies of the forwarded SIGTERM.
	if err := syscall.Kill(m.host, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := m.unshare.exitStatus(t, 20*time.Second); got != 128+int(syscall.SIGTERM) {
		t.Fatalf("exit status %d, want 143 (the worker's: killed by SIGTERM); output:\n%s", got, m.unshare.stderr)
	}
}

// TestPID1ForwardsStopSignals: as PID 1, mworker passes SIGTERM and SIGINT
// on to its worker and exits with the status the worker chose, or
// 128+signal when the worker did not catch it.
func TestPID1ForwardsStopSignals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		caught bool // the worker catches it and exits 7
		want   int
	}{
		{"TERM caught", syscall.SIGTERM, true, 7},
		{"INT caught", syscall.SIGINT, true, 7},
		{"TERM default", syscall.SIGTERM, false, 143},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
			var m *pid1
			var workerPid func() (int, bool)
			if tc.caught {
				m = startPID1(t, []string{envHelper + "=trap", envReadyFile + "=" + ready, envGotFile + "=" + got, envExit + "=7"},
					mworkerPath, "run", "--restart", "no", "--", os.Args[0])
				workerPid = func() (int, bool) {
					b, err := os.ReadFile(ready)
					if err != nil {
						return 0, false
					}
					n, err := strconv.Atoi(string(b))
					return n, err == nil
				}
			} else {
				m = startPID1(t, nil, mworkerPath, "run", "--restart", "no", "--", "sleep", "100000")
				workerPid = func() (int, bool) {
					for _, pid := range children(m.host) {
						if st, ok := readStat("/proc", pid); ok && st.comm == "sleep" {
							return pid, true
						}
					}
					return 0, false
				}
			}
			e2etest.WaitFor(t, 10*time.Second, "the worker to run (and catch signals)", func() bool {
				_, ok := workerPid()
				return ok
			})
			if err := syscall.Kill(m.host, tc.sig); err != nil {
				t.Fatal(err)
			}
			if status := m.unshare.exitStatus(t, 20*time.Second); status != tc.want {
				t.Fatalf("master exited %d after %v, want %d; output:\n%s", status, tc.sig, tc.want, m.unshare.stderr)
			}
			if tc.caught {
				b, err := os.ReadFile(got)
				if err != nil || string(b) != tc.sig.String() {
					t.Fatalf("worker caught %q (%v), want %q", b, err, tc.sig.String())
				}
			}
		})
	}
}
