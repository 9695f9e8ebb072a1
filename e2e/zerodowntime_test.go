package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// reloads is how many reloads the tests run in a row.
const reloads = 20

// demoOptions run two demo workers that say when they are ready.
var demoOptions = []string{"-n", "2", "--ready", "notify"}

// Fresh connections keep being answered while 20 reloads run through the
// control socket: no request fails, answers come from several
// generations, and the master ends at generation 21.
func TestReloadsUnderLoadDropNothing(t *testing.T) {
	m := startMaster(t, t.TempDir(), demoOptions, mworkerPath, "demo-worker")
	if s := m.waitSettled(2, 15*time.Second); s.Master.Generation != 1 {
		t.Fatalf("first generation is %d, want 1", s.Master.Generation)
	}

	l := startLoad(m.httpSock, 4, 500_000, 60*time.Second)
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= 50 }) {
		t.Fatalf("the load got no 50 answers in 10s before any reload: %v", l.stop())
	}
	for i := 1; i <= reloads; i++ {
		if code, stderr := m.reload(); code != 0 {
			t.Fatalf("reload %d of %d: mworker reload exited %d: %s; load so far: %v", i, reloads, code, stderr, l.stop())
		}
	}
	// Some more answers once the last generation has taken over.
	n := l.answered()
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= n+100 }) {
		t.Fatalf("the load got no 100 answers in 10s after the reloads: %v", l.stop())
	}
	r := l.stop()
	t.Logf("load: %d fresh connections answered, %d failed, %d generations seen", r.ok, r.failed, len(r.generations()))

	if r.bounded {
		t.Fatalf("the load ran out of requests or time before the reloads were done, so it did not cover them: %v", r)
	}
	if r.failed != 0 {
		t.Errorf("%d of %d requests failed across %d reloads: %v", r.failed, r.ok+r.failed, reloads, r)
	}
	if gens := r.generations(); len(gens) < 2 {
		t.Errorf("answers came from generations %v only, want more than one across %d reloads", gens, reloads)
	}
	s := m.waitSettled(2, 15*time.Second)
	if s.Master.Generation != reloads+1 {
		t.Errorf("after %d reloads the master is at generation %d, want %d", reloads, s.Master.Generation, reloads+1)
	}
	if s.Master.Pid != m.pid {
		t.Errorf("status names master pid %d, want %d (the pid it was started with)", s.Master.Pid, m.pid)
	}
	c := unixClient(m.httpSock)
	w, err := get(c)
	if err != nil || w.generation != reloads+1 || !slices.Contains(s.currentPids(), w.pid) {
		t.Errorf("a request after the reloads got %+v, %v; want generation %d from one of %v", w, err, reloads+1, s.currentPids())
	}
}

// A new generation that fails (a worker exits before READY=1; no worker
// sends READY=1 in time) is rolled back: mworker reload exits 1 with the
// reason, the old generation keeps answering every request with the same
// pids, and the master stays up and can still reload.
func TestFailedGenerationRolledBack(t *testing.T) {
	dir := t.TempDir()
	modeFile := filepath.Join(dir, "mode")
	setMode := func(mode string) {
		t.Helper()
		if err := os.WriteFile(modeFile, []byte(mode+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The worker reads the mode at its start, so a mode set before a
	// reload decides what the new generation does; the serving one is
	// not affected.
	script := filepath.Join(dir, "worker.sh")
	err := e2etest.WriteExecutable(script, fmt.Sprintf(`#!/bin/sh
case "$(cat '%s')" in
exit)
	echo "worker $$: mode exit: exiting 1 before READY=1" >&2
	exit 1 ;;
hang)
	exec sleep 600 ;; # never sends READY=1
esac
exec '%s' demo-worker
`, modeFile, mworkerPath))
	if err != nil {
		t.Fatal(err)
	}
	setMode("serve")
	const readyTimeout = 2 * time.Second
	m := startMaster(t, dir, []string{"-n", "2", "--ready", "notify", "--ready-timeout", readyTimeout.String(), "--stop-timeout", "5s"},
		"/bin/sh", script)
	first := m.waitSettled(2, 15*time.Second)
	gen, pids := first.Workers[0].Generation, first.currentPids()

	l := startLoad(m.httpSock, 2, 500_000, 60*time.Second)
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= 50 }) {
		t.Fatalf("the load got no 50 answers in 10s before any reload: %v", l.stop())
	}
	for _, tc := range []struct {
		mode, what string
	}{
		{"exit", "a new worker exits before READY=1"},
		{"hang", "no new worker sends READY=1"},
	} {
		setMode(tc.mode)
		began := time.Now()
		code, stderr := m.reload()
		took := time.Since(began)
		reason, found := strings.CutPrefix(strings.TrimSpace(stderr), "mworker reload: failed:")
		switch {
		case code != 1:
			t.Errorf("%s: mworker reload exited %d, want 1; stderr %q", tc.what, code, stderr)
		case !found || strings.TrimSpace(reason) == "" || strings.Count(strings.TrimSpace(stderr), "\n") != 0:
			t.Errorf("%s: mworker reload said %q, want one line \"mworker reload: failed: REASON\"", tc.what, stderr)
		default:
			t.Logf("%s: mworker reload exited 1 after %v: %s", tc.what, took.Round(time.Millisecond), strings.TrimSpace(stderr))
		}
		if tc.mode == "hang" && took < readyTimeout {
			t.Errorf("%s: the reload failed after %v, before --ready-timeout %v", tc.what, took, readyTimeout)
		}
		if m.exited() {
			t.Fatalf("%s: the master exited after the failed reload", tc.what)
		}
		// The new workers are gone; the old ones serve as before.
		s := m.waitSettled(2, 15*time.Second)
		if got := s.currentPids(); !slices.Equal(got, pids) || s.Workers[0].Generation != gen {
			t.Errorf("%s: after the rollback the current workers are %v of generation %d, want %v of generation %d",
				tc.what, got, s.Workers[0].Generation, pids, gen)
		}
		if s.Master.Pid != m.pid {
			t.Errorf("%s: status names master pid %d, want %d", tc.what, s.Master.Pid, m.pid)
		}
	}
	n := l.answered()
	if !e2etest.Poll(10*time.Second, func() bool { return l.answered() >= n+200 }) {
		t.Fatalf("the load got no 200 answers in 10s after the failed reloads: %v", l.stop())
	}
	r := l.stop()
	t.Logf("load: %v", r)
	if r.bounded {
		t.Fatalf("the load ran out of requests or time before the failed reloads were done: %v", r)
	}
	if r.failed != 0 {
		t.Errorf("%d of %d requests failed across the failed reloads: %v", r.failed, r.ok+r.failed, r)
	}
	for w := range r.by {
		if w.generation != gen || !slices.Contains(pids, w.pid) {
			t.Errorf("a request was answered by generation %d pid %d; want only the old generation %d, pids %v", w.generation, w.pid, gen, pids)
		}
	}
	s, err := m.askStatus()
	if err != nil {
		t.Fatalf("status after the failed reloads: %v", err)
	}
	if s.Master.FailedReloads != 2 {
		t.Errorf("status counts %d failed reloads, want 2", s.Master.FailedReloads)
	}

	// The master that rolled back still reloads.
	setMode("serve")
	if code, stderr := m.reload(); code != 0 {
		t.Fatalf("a good reload after the rollbacks exited %d: %s", code, stderr)
	}
	next := m.waitSettled(2, 15*time.Second)
	newGen, newPids := next.Workers[0].Generation, next.currentPids()
	if newGen <= gen || slices.ContainsFunc(newPids, func(p int) bool { return slices.Contains(pids, p) }) {
		t.Errorf("after a good reload the workers are %v of generation %d, want new pids of a generation above %d (old %v)", newPids, newGen, gen, pids)
	}
	c := unixClient(m.httpSock)
	if w, err := get(c); err != nil || w.generation != newGen {
		t.Errorf("a request after the good reload got %+v, %v; want generation %d", w, err, newGen)
	}
}

// The listening socket and the control socket are the same sockets after
// 20 re-execs of the master (same inodes, held by the same pid), and the
// master holds no more file descriptors than before.
func TestListenersSurviveReexecs(t *testing.T) {
	m := startMaster(t, t.TempDir(), demoOptions, mworkerPath, "demo-worker")
	m.waitSettled(2, 15*time.Second)

	httpIno, ctlIno := listeningInode(t, m.httpSock), listeningInode(t, m.ctlSock)
	httpFile, ctlFile := fileInode(t, m.httpSock), fileInode(t, m.ctlSock)
	for _, ino := range []uint64{httpIno, ctlIno} {
		if !holdsSocket(m.pid, ino) {
			t.Fatalf("master %d holds no fd on socket inode %d; fds %v", m.pid, ino, fds(m.pid))
		}
	}
	before := stableFds(t, m.pid)

	c := unixClient(m.httpSock)
	for i := 1; i <= reloads; i++ {
		if code, stderr := m.reload(); code != 0 {
			t.Fatalf("reload %d of %d: mworker reload exited %d: %s", i, reloads, code, stderr)
		}
		s, err := m.askStatus()
		if err != nil {
			t.Fatalf("status after reload %d: %v", i, err)
		}
		if s.Master.Pid != m.pid || s.Master.Generation != i+1 {
			t.Fatalf("after reload %d status says master pid %d at generation %d; want pid %d at generation %d", i, s.Master.Pid, s.Master.Generation, m.pid, i+1)
		}
		if _, err := get(c); err != nil {
			t.Fatalf("a request after reload %d failed: %v", i, err)
		}
	}
	if m.exited() {
		t.Fatal("the master exited during the reloads")
	}
	m.waitSettled(2, 15*time.Second)

	var after []string
	if !e2etest.Poll(10*time.Second, func() bool { after = fds(m.pid); return len(after) == len(before) }) {
		t.Errorf("master has %d fds after %d reloads, %d before\nbefore: %v\nafter:  %v", len(after), reloads, len(before), before, after)
	}
	for _, tc := range []struct {
		name         string
		path         string
		ino, fileIno uint64
	}{
		{"listener", m.httpSock, httpIno, httpFile},
		{"control socket", m.ctlSock, ctlIno, ctlFile},
	} {
		if got := listeningInode(t, tc.path); got != tc.ino {
			t.Errorf("%s %s is socket inode %d after the reloads, %d before: it was bound again, not kept", tc.name, tc.path, got, tc.ino)
		}
		if got := fileInode(t, tc.path); got != tc.fileIno {
			t.Errorf("%s file %s is inode %d after the reloads, %d before: it was removed and created again", tc.name, tc.path, got, tc.fileIno)
		}
		if !holdsSocket(m.pid, tc.ino) {
			t.Errorf("master %d no longer holds the %s (socket inode %d); fds %v", m.pid, tc.name, tc.ino, fds(m.pid))
		}
	}
	if w, err := get(c); err != nil || w.generation != reloads+1 {
		t.Errorf("a request after the reloads got %+v, %v; want generation %d", w, err, reloads+1)
	}
}

// stableFds returns the master's fds once two reads 50ms apart agree, so
// that a control connection still being closed is not counted.
func stableFds(t *testing.T, pid int) []string {
	t.Helper()
	var prev, cur []string
	if !e2etest.Poll(5*time.Second, func() bool {
		prev, cur = cur, fds(pid)
		if prev != nil && slices.Equal(prev, cur) {
			return true
		}
		time.Sleep(40 * time.Millisecond)
		return false
	}) {
		t.Fatalf("master %d's fds kept changing for 5s: %v", pid, cur)
	}
	return cur
}

func fileInode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// Control clients that connect while the master re-executes are all
// answered: one accepted by the old image has its request handed over,
// one that connects during the execve waits in the listen queue for the
// new image. None sees its connection close unanswered.
func TestControlClientsAnsweredAcrossReexecs(t *testing.T) {
	opts := append(slices.Clone(demoOptions), "--reexec", "always")
	m := startMaster(t, t.TempDir(), opts, mworkerPath, "demo-worker")
	m.waitSettled(2, 15*time.Second)

	stop := make(chan struct{})
	type result struct {
		asked, failed int
		last          error
	}
	results := make(chan result, 4)
	for range 4 {
		go func() {
			var r result
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				r.asked++
				if _, err := m.askStatus(); err != nil {
					r.failed++
					r.last = err
				}
			}
		}()
	}
	for i := 1; i <= reloads; i++ {
		if code, stderr := m.reload(); code != 0 {
			close(stop)
			t.Fatalf("reload %d: mworker reload exited %d: %s", i, code, stderr)
		}
	}
	close(stop)
	var total result
	for range 4 {
		r := <-results
		total.asked += r.asked
		total.failed += r.failed
		if r.last != nil {
			total.last = r.last
		}
	}
	t.Logf("%d status requests during %d reloads, %d failed", total.asked, reloads, total.failed)
	if total.asked < reloads {
		t.Fatalf("only %d status requests during %d reloads: the test did not exercise the exec window", total.asked, reloads)
	}
	if total.failed > 0 {
		t.Fatalf("%d of %d status requests failed across %d re-execs; last: %v", total.failed, total.asked, reloads, total.last)
	}
}
