package chaos

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/demo"
	"github.com/mworker/mworker/internal/e2etest"
)

// gcShort runs TestGCKeepsListeners with 2,000 status calls and 40
// reloads instead of the full count (10,000 and 200, about 17 s
// on an idle machine), which the old code failed many times over too.
var gcShort = flag.Bool("chaos.gcshort", false, "run the GC test with 2,000 status calls and 40 reloads instead of 10,000 and 200")

// TestGCKeepsListeners is issue 12's first item: with GOGC=1 in the
// master's environment, a stream of status calls (each one allocates, so
// the collector runs again and again) and reloads (each re-exec hands the
// listener to a new image) must leave the master holding the very
// listening socket it bound at start, and every worker must get that
// socket as fd 3. An earlier master kept only the listener's fd number
// while the *os.File that owned it became garbage: its finalizer closed
// the socket after a few dozen status calls, every spawn then failed with
// "bad file descriptor", and once the number was reused workers got the
// control socket as fd 3.
func TestGCKeepsListeners(t *testing.T) {
	t.Parallel()
	statuses, reloads := 10000, 200
	if *gcShort {
		statuses, reloads = 2000, 40
	}
	m := gcStartMaster(t)
	sock := filepath.Join(m.dir, "web.sock")
	m.waitServing(2, 30*time.Second)
	ino := gcListenerInode(t, sock)
	want := fmt.Sprintf("socket:[%d]", ino)
	start := time.Now()

	every := statuses / reloads
	for i := 1; i <= statuses; i++ {
		a, err := ask(m.ctl, "status", 10*time.Second)
		if err != nil || !a.OK {
			t.Fatalf("status call %d: %+v, %v; master's fds %v; log:\n%s", i, a, err, fdTargets(m.p.Pid), lastLines(m.logText(), 20))
		}
		if i%100 == 0 && !gcHasFd(m.p.Pid, want) {
			t.Fatalf("after %d status calls the master no longer holds the listener %s; its fds: %v; log:\n%s", i, want, fdTargets(m.p.Pid), lastLines(m.logText(), 20))
		}
		if i%every == 0 {
			a, err := ask(m.ctl, "reload", time.Minute)
			if err != nil || !a.OK {
				t.Fatalf("reload %d (after %d status calls): %+v, %v; master's fds %v; log:\n%s", i/every, i, a, err, fdTargets(m.p.Pid), lastLines(m.logText(), 20))
			}
		}
	}
	t.Logf("%d status calls and %d reloads in %v", statuses, reloads, time.Since(start).Round(time.Millisecond))

	a := m.waitServing(2, 30*time.Second)
	if got := gcListenerInode(t, sock); got != ino {
		t.Errorf("the socket listening at %s is inode %d, was %d at start", sock, got, ino)
	}
	if !gcHasFd(m.p.Pid, want) {
		t.Errorf("the master no longer holds the listener %s; its fds: %v", want, fdTargets(m.p.Pid))
	}
	// Every worker of every generation noted its fd 3 before it became
	// the demo worker, which takes fd 3 over as a net.Listener (a
	// duplicate) and closes it.
	notes, _ := filepath.Glob(filepath.Join(m.dir, "fd3.*"))
	if len(notes) < 2*(reloads+1) {
		t.Errorf("%d workers noted their fd 3, want at least %d", len(notes), 2*(reloads+1))
	}
	for _, n := range notes {
		if b, _ := os.ReadFile(n); strings.TrimSpace(string(b)) != want {
			t.Errorf("worker %s had %q as fd 3, want the listener %s", strings.TrimPrefix(filepath.Ext(n), "."), strings.TrimSpace(string(b)), want)
		}
	}
	for _, pid := range currentPids(a) {
		if !gcHasFd(pid, want) {
			t.Errorf("worker %d does not hold the listener %s; its fds: %v", pid, want, fdTargets(pid))
		}
	}
	if body, err := gcGet(sock); err != nil || !strings.HasPrefix(body, "generation=") {
		t.Errorf("GET on the listener: %q, %v; log:\n%s", body, err, lastLines(m.logText(), 20))
	}
}

// gcStartMaster is startMaster with GOGC=1 in the master's environment
// (and so in every image it re-executes): the collector runs after
// nearly every allocation. The master serves the demo worker on a unix
// listener in its directory, two workers, --ready notify; each worker
// first writes what its fd 3 is to DIR/fd3.PID.
func gcStartMaster(t *testing.T) *master {
	t.Helper()
	dir := t.TempDir()
	m := &master{t: t, dir: dir, ctl: filepath.Join(dir, "ctl.sock"), log: filepath.Join(dir, "master.log")}
	p, err := e2etest.StartLoggedEnv(m.log, append(os.Environ(), "GOGC=1"), mworkerPath, "run", "--control", m.ctl,
		"-n", "2", "--ready", "notify", "--listen", "unix://"+filepath.Join(dir, "web.sock"),
		"--", "/bin/sh", "-c", `readlink /proc/$$/fd/3 > "$0/fd3.tmp.$$" && mv "$0/fd3.tmp.$$" "$0/fd3.$$" && exec "$1" "$2"`,
		dir, mworkerPath, demo.WorkerCommand)
	if err != nil {
		t.Fatal(err)
	}
	m.p = p
	t.Cleanup(m.kill)
	return m
}

// gcListenerInode is the inode of the socket listening at path, from
// /proc/net/unix: what the kernel says, not what mworker says.
func gcListenerInode(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Num RefCount Protocol Flags Type St Inode [Path]: a listening
	// stream socket has flag __SO_ACCEPTCON (00010000) and type 0001.
	var found []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 8 && fields[7] == path && fields[3] == "00010000" && fields[4] == "0001" {
			var ino uint64
			if _, err := fmt.Sscan(fields[6], &ino); err == nil {
				found = append(found, ino)
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one stream socket listening at %s in /proc/net/unix, found inodes %v", path, found)
	}
	return found[0]
}

// gcHasFd says whether pid has an fd open on target ("socket:[123]").
func gcHasFd(pid int, target string) bool {
	for _, got := range fdTargets(pid) {
		if got == target {
			return true
		}
	}
	return false
}

// gcGet sends one GET over the unix listener at path and returns the body.
func gcGet(path string) (string, error) {
	c := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			},
		},
	}
	resp, err := c.Get("http://mworker/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}
