package osadapter

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mworker/mworker/internal/sdnotify"

	"github.com/mworker/mworker/internal/e2etest"
)

// notifyAddr is the NOTIFY_SOCKET a test worker logged, or "".
func notifyAddr(dir string, pid int) string {
	m := regexp.MustCompile(`(?m)^notify=(.*)$`).FindStringSubmatch(workerLog(dir, pid))
	if m == nil {
		return ""
	}
	return m[1]
}

// openFds counts pid's open descriptors.
func openFds(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// With --ready notify each worker gets a notify socket of its own; its
// READY=1 (after a malformed datagram, which is ignored) makes it ready,
// across re-execs; a generation that never sends READY=1 is rolled back;
// and the master's descriptors do not grow with the reloads.
func TestRealReadyNotify(t *testing.T) {
	t.Parallel()
	bin := testBinary(t)
	m := startMaster(t, bin, testMaster{Workers: 2, Ready: "notify", ReadyTimeout: 2 * time.Second,
		StopSignal: int(syscall.SIGUSR1), Command: []string{bin, "worker", "DIR"}})
	e2etest.WaitFor(t, 20*time.Second, "2 workers ready", func() bool { return m.count("worker ready") == 2 })
	e2etest.WaitFor(t, 10*time.Second, "all workers ready", func() bool { return m.count("all workers ready") == 1 })
	if n := m.count("notify datagram ignored"); n < 2 {
		t.Errorf("%d malformed datagrams logged, want one per worker", n)
	}
	master := m.cmd.Process.Pid
	settled := func(workers int) {
		t.Helper()
		e2etest.WaitFor(t, 20*time.Second, strconv.Itoa(workers)+" live workers", func() bool { return liveCount(workerPids(m.dir)) == workers })
	}
	settled(2)
	fdsBefore := openFds(t, master)

	const reloads = 5
	for i := 1; i <= reloads; i++ {
		m.signal(syscall.SIGUSR2)
		e2etest.WaitFor(t, 20*time.Second, "reload "+strconv.Itoa(i), func() bool { return m.count("reload complete") == i })
	}
	settled(2)
	e2etest.WaitFor(t, 10*time.Second, "the master's fds back to their count before the reloads", func() bool {
		return openFds(t, master) == fdsBefore
	})

	pids := workerPids(m.dir)
	if len(pids) != 2*(reloads+1) {
		t.Fatalf("%d workers started, want %d", len(pids), 2*(reloads+1))
	}
	var addrs []string
	for _, pid := range pids {
		l := workerLog(m.dir, pid)
		a := notifyAddr(m.dir, pid)
		switch {
		case a == "":
			t.Errorf("worker %d got no NOTIFY_SOCKET:\n%s", pid, l)
		case slices.Contains(addrs, a):
			t.Errorf("worker %d shares notify socket %s with another worker", pid, a)
		case strings.Contains(l, "notify error"), strings.Contains(l, "badenv"):
			t.Errorf("worker %d:\n%s", pid, l)
		}
		addrs = append(addrs, a)
	}

	// A generation whose workers stay silent is rolled back after
	// --ready-timeout; the serving workers stay.
	if err := os.WriteFile(filepath.Join(m.dir, "silent"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	serving := liveOf(workerPids(m.dir))
	m.signal(syscall.SIGUSR2)
	e2etest.WaitFor(t, 20*time.Second, "rollback", func() bool { return m.count("reload failed: rolled back") == 1 })
	e2etest.WaitFor(t, 20*time.Second, "the silent workers gone", func() bool { return slices.Equal(liveOf(workerPids(m.dir)), serving) })

	m.signal(syscall.SIGTERM)
	if got := m.wait(20 * time.Second); got != 0 {
		t.Errorf("master exited %d, want 0", got)
	}
	for _, bad := range []string{"cannot take over a notify socket", "bad notify socket entry", "level=WARN", "level=ERROR msg=\"reload failed: the master"} {
		if strings.Contains(m.log(), bad) {
			t.Errorf("master log holds %q", bad)
		}
	}
	if os.Getenv("OSADAPTER_SHOW_LOG") != "" {
		t.Log(m.log())
	}
}

// liveOf is the pids still alive, sorted.
func liveOf(pids []int) []int {
	var out []int
	for _, p := range pids {
		if alive(p) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func nextReady(t *testing.T, r *readySockets) readySignal {
	t.Helper()
	select {
	case sig := <-r.out:
		return sig
	case <-time.After(10 * time.Second):
		t.Fatal("no READY=1 within 10s")
	}
	return readySignal{}
}

// readyEnv is an environment whose notify socket directory goes under a
// directory of the test.
func readyEnv(t *testing.T) []string {
	return []string{"TMPDIR=" + t.TempDir()}
}

// A socket names its worker; a reaped worker's socket is closed and its
// file removed, and its late signals are not current; the directory and
// the sockets of live workers reach the next image (here: a second
// readySockets in the same process) with their datagrams, and a failed
// handover closes its duplicates.
func TestReadySocketsAcrossHandover(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := newReadySockets(true, log, readyEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.exit()
	a, err := r.open(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.open(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if a.s.Addr() != filepath.Join(r.dir, "1.0.1") || b.s.Addr() != filepath.Join(r.dir, "1.1.2") {
		t.Fatalf("addresses %q and %q: want 1.0.1 and 1.1.2 in %s", a.s.Addr(), b.s.Addr(), r.dir)
	}
	r.watch(a, 100)
	r.watch(b, 101)
	if err := sdnotify.Send(b.s.Addr(), "STATUS=starting\nREADY=1"); err != nil {
		t.Fatal(err)
	}
	if sig := nextReady(t, r); sig.sock.pid != 101 || !r.current(sig) {
		t.Fatalf("READY=1 on the socket of 101 arrived as pid %d (current %v)", sig.sock.pid, r.current(sig))
	}
	stale := readySignal{sock: b}
	r.drop(101)
	if r.current(stale) {
		t.Error("a signal of a reaped worker's socket still counts")
	}
	if err := sdnotify.Send(b.s.Addr(), "READY=1"); err == nil {
		t.Error("the socket of a reaped worker still receives")
	}
	if _, err := os.Lstat(b.s.Addr()); !os.IsNotExist(err) {
		t.Errorf("the socket file of a reaped worker: %v, want it removed", err)
	}

	// Handover: worker 100 has not said READY=1 yet.
	env, undo, err := r.prepareExec()
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != 2 || env[1] != envReadyDir+"="+r.dir {
		t.Fatalf("handover %q: want the sockets and %s=%s", env, envReadyDir, r.dir)
	}
	v, ok := strings.CutPrefix(env[0], envReadySockets+"=")
	var fd int
	if _, err := fmt.Sscanf(v, "100:%d", &fd); !ok || err != nil || strings.Contains(v, ",") {
		t.Fatalf("handover %q: want only worker 100's socket", env)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC != 0 {
		t.Fatalf("handed-over fd %d: flags %#x, %v; want close-on-exec cleared", fd, flags, err)
	}
	// The exec keeps the handed-over descriptors and closes the rest; here
	// the next image gets copies, and this one closes all of its own. An
	// exec leaves the socket files; closeAll removes them, so a second
	// link keeps worker 100's in place.
	copyFd, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	v = "100:" + strconv.Itoa(copyFd)
	if err := os.Link(a.s.Addr(), a.s.Addr()+".exec"); err != nil {
		t.Fatal(err)
	}
	r.closeAll()
	undo()
	if err := os.Rename(a.s.Addr()+".exec", a.s.Addr()); err != nil {
		t.Fatal(err)
	}
	// Sent between the exec and the next image's receive: it waits in the
	// socket, which the duplicate keeps open.
	if err := sdnotify.Send(a.s.Addr(), "READY=1"); err != nil {
		t.Fatal(err)
	}
	var nextLog strings.Builder
	next, err := newReadySockets(true, slog.New(slog.NewTextHandler(&nextLog, &slog.HandlerOptions{Level: slog.LevelDebug})), append(readyEnv(t), env[1]))
	if err != nil {
		t.Fatal(err)
	}
	defer next.exit()
	if next.dir != r.dir {
		t.Fatalf("the next image uses %s, want the directory it was handed, %s", next.dir, r.dir)
	}
	next.adopt(v)
	if sig := nextReady(t, next); sig.sock.pid != 100 || !next.current(sig) {
		t.Fatalf("after the handover READY=1 arrived as pid %d", sig.sock.pid)
	}
	// Its names follow the previous image's: not one is taken.
	c, err := next.open(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	c.close(log)
	if c.s.Addr() != filepath.Join(r.dir, "1.0.2") || strings.Contains(nextLog.String(), "name taken") {
		t.Errorf("the next image's first socket is %s, want 1.0.2 in %s at the first try; log:\n%s", c.s.Addr(), r.dir, nextLog.String())
	}

	// A failed exec: the duplicates are closed again.
	_, undo2, err := next.prepareExec()
	if err != nil {
		t.Fatal(err)
	}
	before := countFds(t)
	undo2()
	if after := countFds(t); after != before-1 {
		t.Errorf("undo left %d fds, want %d", after, before-1)
	}

	// The last image's exit removes the directory and what is in it.
	dir := next.dir
	next.exit()
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("after exit: %v, want the notify socket directory removed", err)
	}
}

// The directory is private (0700, the master's uid), under the first
// usable place; a place too long for sun_path, or one another user could
// swap it in, is passed over; when none is left, the error says so.
func TestReadyDirPlace(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	base := t.TempDir()
	if len(base)+len("/run")+readyDirSuffix+readyNameRoom > sdnotify.MaxAddr {
		// A long TMPDIR: the test needs a place short enough.
		var err error
		if base, err = os.MkdirTemp("/tmp", "rd"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(base) })
	}
	short := filepath.Join(base, "run")
	long := filepath.Join(base, strings.Repeat("l", 60))
	open := filepath.Join(base, "open")
	for _, d := range []string{short, long, open} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}

	r, err := newReadySockets(true, log, []string{"RUNTIME_DIRECTORY=" + short + ":/elsewhere", "TMPDIR=" + base})
	if err != nil {
		t.Fatal(err)
	}
	defer r.exit()
	fi, err := os.Stat(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if filepath.Dir(r.dir) != short || !strings.HasPrefix(filepath.Base(r.dir), "mworker-") || fi.Mode() != os.ModeDir|0o700 || int(st.Uid) != os.Getuid() {
		t.Errorf("directory %s, mode %v, uid %d: want mworker-* of mode 0700 and uid %d in %s", r.dir, fi.Mode(), st.Uid, os.Getuid(), short)
	}

	r2, err := newReadySockets(true, log, []string{"RUNTIME_DIRECTORY=" + long, "XDG_RUNTIME_DIR=" + open, "TMPDIR=" + short})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.exit()
	if filepath.Dir(r2.dir) != short {
		t.Errorf("with a long RUNTIME_DIRECTORY and an open XDG_RUNTIME_DIR: directory %s, want one in %s", r2.dir, short)
	}

	// Without --ready notify, no directory.
	r3, err := newReadySockets(false, log, []string{"TMPDIR=" + short})
	if err != nil || r3.dir != "" {
		t.Errorf("without --ready notify: %q, %v; want no directory", r3.dir, err)
	}

	_, err = makeReadyDir([]string{long, open}, log)
	if err == nil || !strings.Contains(err.Error(), "too long") || !strings.Contains(err.Error(), "writable by others") || !strings.Contains(err.Error(), "set TMPDIR") {
		t.Errorf("no usable place: %v; want each refusal and what to do", err)
	}

	// A handed-over directory that is no longer private is not adopted.
	if err := os.Chmod(r.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r4, err := newReadySockets(true, log, []string{envReadyDir + "=" + r.dir, "TMPDIR=" + short})
	if err != nil {
		t.Fatal(err)
	}
	defer r4.exit()
	if r4.dir == r.dir || r4.dir == "" {
		t.Errorf("a handed-over directory of mode 0755 was adopted (%s)", r4.dir)
	}
}

// A name already taken in the directory does not fail the spawn: the next
// one is used at once.
func TestReadySocketNameTaken(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := newReadySockets(true, log, readyEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.exit()
	// A file and a socket bound by someone else at the next two names.
	if err := os.WriteFile(filepath.Join(r.dir, "2.0.1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	squatter, err := sdnotify.Listen(filepath.Join(r.dir, "2.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	rs, err := r.open(2, 0)
	if err != nil {
		t.Fatalf("open with the next names taken: %v", err)
	}
	defer rs.close(log)
	if rs.s.Addr() != filepath.Join(r.dir, "2.0.3") {
		t.Errorf("socket at %s, want 2.0.3 in %s", rs.s.Addr(), r.dir)
	}

	// Taken names without end give up, with the reason.
	for i := 4; i < 4+readyRetries; i++ {
		if err := os.WriteFile(filepath.Join(r.dir, "2.0."+strconv.Itoa(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.open(2, 0); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("open with every name taken: %v, want EADDRINUSE", err)
	}
}

func countFds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
