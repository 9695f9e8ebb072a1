package chaos

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/e2etest"
)

// The test binary doubles as two helpers, chosen by its first argument
// (checked in init, before TestMain builds anything):
//
//   - squatterBind ADDR...: the squatter, run as uid 65534. It binds a
//     datagram socket at every ADDR whose name ends in "+" (the "+"
//     dropped) and sends one datagram to every other ADDR, prints one line
//     per ADDR ("ok ADDR" or "failed ADDR: ERROR") and "done", then holds
//     its sockets until its stdin closes.
//   - squatterPathClient: a worker whose notify client takes NOTIFY_SOCKET
//     only as a filesystem path, as Ruby's sd_notify 0.1.1 does (puma
//     under --ready notify): an abstract "@NAME" makes it exit 1, as that
//     client's connect fails. Otherwise it sends READY=1 and waits for a
//     stop signal.
const (
	squatterBind       = "chaos-squatter-bind"
	squatterPathClient = "chaos-squatter-path-client"
)

func init() {
	if len(os.Args) < 2 {
		return
	}
	switch os.Args[1] {
	case squatterBind:
		os.Exit(squatterBindMain(os.Args[2:]))
	case squatterPathClient:
		os.Exit(squatterPathClientMain())
	}
}

func squatterBindMain(addrs []string) int {
	out := bufio.NewWriter(os.Stdout)
	for _, a := range addrs {
		name, bind := strings.CutSuffix(a, "+")
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			// x/sys/unix takes a leading "@" as the abstract namespace.
			if bind {
				err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
			} else {
				err = unix.Sendto(fd, []byte("READY=1"), 0, &unix.SockaddrUnix{Name: name})
				unix.Close(fd)
			}
		}
		if err != nil {
			fmt.Fprintf(out, "failed %s: %v\n", a, err)
		} else {
			fmt.Fprintf(out, "ok %s\n", a)
		}
	}
	fmt.Fprintln(out, "done")
	out.Flush()
	io.Copy(io.Discard, os.Stdin)
	return 0
}

func squatterPathClientMain() int {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1)
	addr := os.Getenv("NOTIFY_SOCKET")
	if !strings.HasPrefix(addr, "/") {
		fmt.Fprintf(os.Stderr, "path-only notify client: NOTIFY_SOCKET %q is not a filesystem path\n", addr)
		return 1
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Sendto(fd, []byte("READY=1"), 0, &unix.SockaddrUnix{Name: addr})
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "path-only notify client: send READY=1 to %s: %v\n", addr, err)
		return 1
	}
	<-stop
	return 0
}

var (
	squatterOnce sync.Once
	squatterExe  string
	squatterErr  error
)

// squatterHelper is a copy of the test binary that other uids can execute:
// next to the mworker binary, in the directory TestMain opened to them
// (the test binary itself lies under the go command's private directory).
func squatterHelper(t *testing.T) string {
	t.Helper()
	squatterOnce.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			squatterErr = err
			return
		}
		squatterExe = filepath.Join(filepath.Dir(mworkerPath), "squatter-helper")
		if squatterErr = e2etest.CopyFile(exe, squatterExe); squatterErr == nil {
			squatterErr = os.Chmod(squatterExe, 0o755)
		}
	})
	if squatterErr != nil {
		t.Fatal(squatterErr)
	}
	return squatterExe
}

// squatterNotifySocket is the NOTIFY_SOCKET the master gave worker pid.
func squatterNotifySocket(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(b), "\x00") {
		if v, ok := strings.CutPrefix(kv, "NOTIFY_SOCKET="); ok {
			return v
		}
	}
	t.Fatalf("worker %d has no NOTIFY_SOCKET", pid)
	return ""
}

// squatterSplit cuts a worker's notify address ".../<gen>.<slot>.<seq>"
// (the scheme of both the abstract names and the path names) into the
// part before the name, the generation and the sequence number.
func squatterSplit(t *testing.T, addr string) (dir string, gen, seq int) {
	t.Helper()
	i := strings.LastIndexByte(addr, '/')
	parts := strings.Split(addr[i+1:], ".")
	if i < 0 || len(parts) != 3 {
		t.Fatalf("notify address %q: want .../<gen>.<slot>.<seq>", addr)
	}
	gen, err1 := strconv.Atoi(parts[0])
	seq, err2 := strconv.Atoi(parts[2])
	if err1 != nil || err2 != nil {
		t.Fatalf("notify address %q: want .../<gen>.<slot>.<seq>", addr)
	}
	return addr[:i+1], gen, seq
}

// squat runs the squatter as uid 65534 on addrs and returns its report,
// one line per address. It holds its sockets until the test ends.
func squat(t *testing.T, addrs []string) []string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("the squatter runs as uid 65534 (nobody): needs root to setuid, this test runs as uid " + strconv.Itoa(os.Getuid()))
	}
	cmd := exec.Command(squatterHelper(t), append([]string{squatterBind}, addrs...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errorsIsPerm(err) {
			t.Skip("cannot start a process as uid 65534 (nobody) here: " + err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "done" {
			return lines
		}
		lines = append(lines, sc.Text())
	}
	t.Fatalf("the squatter stopped before it was done (%v); it said:\n%s", sc.Err(), strings.Join(lines, "\n"))
	return nil
}

func errorsIsPerm(err error) bool {
	return strings.Contains(err.Error(), "operation not permitted")
}

// Another uid cannot keep a crashed worker from being restarted (issue 12,
// item 4). The squatter, uid 65534, takes every notify address the master
// would give the next workers of the generation (the old abstract names
// could be read in /proc/net/unix and bound by anyone) and tries to send
// to a live worker's socket; then a worker is killed, and its slot must
// hold a ready worker again within seconds.
func TestSquatterCannotEmptySlot(t *testing.T) {
	t.Parallel()
	const n = 2
	m := startMaster(t, "-n", strconv.Itoa(n), "--listen", "127.0.0.1:0", "--ready", "notify", "--", mworkerPath, "demo-worker")
	a := m.waitServing(n, 20*time.Second)
	pids := currentPids(a)

	var dir string
	gen, seq := 0, 0
	var live string
	for _, pid := range pids {
		addr := squatterNotifySocket(t, pid)
		d, g, s := squatterSplit(t, addr)
		if dir != "" && d != dir {
			t.Fatalf("workers' notify addresses under %q and %q: want one directory", dir, d)
		}
		dir, gen, seq, live = d, g, max(seq, s), addr
	}
	var addrs []string
	for s := seq + 1; s <= seq+40; s++ {
		for slot := range n {
			addrs = append(addrs, dir+strconv.Itoa(gen)+"."+strconv.Itoa(slot)+"."+strconv.Itoa(s)+"+")
		}
	}
	addrs = append(addrs, live)
	report := squat(t, addrs)
	bound := 0
	for _, l := range report {
		if strings.HasPrefix(l, "ok ") && strings.HasSuffix(l, "+") {
			bound++
		}
	}
	t.Logf("notify addresses like %s; the squatter took %d of the next %d", live, bound, len(addrs)-1)
	if strings.HasPrefix(live, "/") {
		// A path in the master's private directory: uid 65534 cannot even
		// look in.
		for _, l := range report {
			if !strings.HasSuffix(l, ": permission denied") {
				t.Errorf("squatter (uid 65534): %s; want permission denied", l)
			}
		}
	}

	victim := pids[0]
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var last []int
	ok := e2etest.Poll(10*time.Second, func() bool {
		a, err := m.status(2 * time.Second)
		if err != nil {
			return false
		}
		last = last[:0]
		for _, w := range a.Workers {
			if w.Current && w.Ready {
				last = append(last, w.Pid)
			}
		}
		return len(last) == n && !slices.Contains(last, victim)
	})
	if !ok {
		t.Fatalf("worker %d killed: after 10 s the ready current workers are %v, want %d; log:\n%s",
			victim, last, n, lastLines(m.logText(), 20))
	}
	squatterStop(t, m, live)
}

// squatterStop stops the master with SIGTERM and checks that it removed
// the directory of the notify address addr (a master killed by SIGKILL,
// as the tests' cleanup does, leaves it).
func squatterStop(t *testing.T, m *master, addr string) {
	t.Helper()
	if err := m.p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e2etest.WaitFor(t, 20*time.Second, "the master's exit", m.exited)
	if m.p.Status != 0 {
		t.Errorf("master exited %d, want 0; log:\n%s", m.p.Status, lastLines(m.logText(), 10))
	}
	if dir := filepath.Dir(addr); strings.HasPrefix(addr, "/") {
		if _, err := os.Lstat(dir); !os.IsNotExist(err) {
			t.Errorf("after the master's exit, its notify socket directory %s: %v; want it removed", dir, err)
		}
	}
}

// A notify client that takes NOTIFY_SOCKET only as a filesystem path (Ruby's
// sd_notify 0.1.1, so puma) gets its workers ready: an abstract address
// made them crash-loop.
func TestSquatterPathOnlyNotifyClient(t *testing.T) {
	t.Parallel()
	m := startMaster(t, "-n", "2", "--ready", "notify", "--", squatterHelper(t), squatterPathClient)
	a := m.waitServing(2, 20*time.Second)
	squatterStop(t, m, squatterNotifySocket(t, currentPids(a)[0]))
}
