package chaos

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// shortlivedWorker serves (sleeps) until it is told to stop, unless the
// marker file named by $1 exists when it starts: then it reads its "bad
// config" and exits 3 after 0.3 s, as a server does that parses its
// configuration only once it is running.
const shortlivedWorker = `#!/bin/sh
if [ -e "$1" ]; then
	sleep 0.3
	exit 3
fi
exec sleep 1000
`

// TestShortLivedGenerationRolledBack is issue 12's item 7: with the
// default --ready, a new generation whose workers exit 3 after 0.3 s got
// "reload succeeded", the old generation was told to stop, and the new one
// crash-looped: an outage. The reload must fail instead, naming the exit,
// and the old generation must keep serving; once the cause is gone, the
// next reload succeeds.
func TestShortLivedGenerationRolledBack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	script := filepath.Join(dir, "worker.sh")
	marker := filepath.Join(dir, "bad-config")
	if err := e2etest.WriteExecutable(script, shortlivedWorker); err != nil {
		t.Fatal(err)
	}
	// Default flags for --ready: the default is what is under test.
	m := startMaster(t, "-n", "2", "--", script, marker)
	before := currentPids(m.waitServing(2, 30*time.Second))

	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := shortlivedReload(t, m)
	if code != 1 {
		t.Fatalf("mworker reload of a generation that exits 3 after 0.3 s: exit status %d, want 1; output %q; log:\n%s",
			code, out, lastLines(m.logText(), 30))
	}
	if !strings.Contains(out, "mworker reload: failed:") || !strings.Contains(out, "exit:3") {
		t.Errorf("mworker reload said %q; want the failed reload and the worker's exit:3", out)
	}
	// The rollback answered; the old workers are current again, alive and
	// never told to stop.
	a := m.waitServing(2, 30*time.Second)
	if got := currentPids(a); !slices.Equal(shortlivedSorted(got), shortlivedSorted(before)) {
		t.Fatalf("current workers after the failed reload are %v, want the old generation %v; log:\n%s",
			got, before, lastLines(m.logText(), 30))
	}
	for _, pid := range before {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("old worker %d is gone after the failed reload: %v", pid, err)
		}
	}
	if a.Master.Generation != 1 || a.Master.FailedReloads != 1 || a.Master.Reloads != 0 {
		t.Errorf("status after the failed reload: generation %d, reloads %d, failed %d; want 1, 0, 1",
			a.Master.Generation, a.Master.Reloads, a.Master.FailedReloads)
	}

	// The configuration is fixed: the next reload goes through.
	if err := os.Remove(marker); err != nil {
		t.Fatal(err)
	}
	if out, code := shortlivedReload(t, m); code != 0 {
		t.Fatalf("mworker reload after the fix: exit status %d, output %q; log:\n%s", code, out, lastLines(m.logText(), 30))
	}
	a = m.waitServing(2, 30*time.Second)
	if a.Master.Reloads != 1 || a.Master.FailedReloads != 1 {
		t.Errorf("status after the second reload: reloads %d, failed %d; want 1, 1", a.Master.Reloads, a.Master.FailedReloads)
	}
	for _, pid := range currentPids(a) {
		if slices.Contains(before, pid) {
			t.Errorf("worker %d of the first generation is still current after a successful reload", pid)
		}
	}
}

// shortlivedReload runs the real "mworker reload" client against m and
// returns its output and exit status.
func shortlivedReload(t *testing.T, m *master) (string, int) {
	t.Helper()
	cmd := exec.Command(mworkerPath, "reload", "--control", m.ctl, "--timeout", "60s")
	b, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return string(b), 0
	case errors.As(err, &ee):
		return string(b), ee.ExitCode()
	}
	t.Fatalf("mworker reload: %v", err)
	return "", 0
}

func shortlivedSorted(pids []int) []int {
	s := slices.Clone(pids)
	slices.Sort(s)
	return s
}
