package chaos

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/e2etest"
)

// oldgensStubborn is a worker that ignores SIGTERM: its generation drains
// until --stop-timeout, and reloads pile generations up. Once it ignores
// TERM it creates the file $0/<its pid>, so that a test does not reload
// (and send TERM) before.
const oldgensStubborn = `trap "" TERM; : > "$0/$$"; while :; do sleep 0.05; done`

// TestMaxOldGenerations is issue 13's item 4 against the real binary:
// with workers that ignore the stop signal, a long --stop-timeout and
// --max-old-generations 2, the second reload leaves two generations
// draining, and the third SIGKILLs the first (its workers die within the
// stop timeout, with one WARN naming them) while the second keeps
// draining. Under --reexec always the first two generations are adopted by
// a re-executed master, and still counted.
func TestMaxOldGenerations(t *testing.T) {
	t.Parallel()
	for _, reexec := range []string{"upgrade", "always"} {
		t.Run("reexec="+reexec, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			m := startMaster(t, "-n", "2", "--ready", "immediate", "--stop-timeout", "60s",
				"--max-old-generations", "2", "--reexec", reexec,
				"--", "/bin/sh", "-c", oldgensStubborn, dir)
			// They ignore the SIGTERM a dead master's workers get
			// (PR_SET_PDEATHSIG): end them when the test ends.
			t.Cleanup(func() { oldgensKillAll(dir) })
			gens := map[int][]int{1: oldgensCurrent(t, m, dir, 1)}
			for g := 2; g <= 4; g++ {
				a, err := ask(m.ctl, "reload", 20*time.Second)
				if err != nil || !a.OK {
					t.Fatalf("reload %d: %+v %v; log:\n%s", g-1, a, err, lastLines(m.logText(), 20))
				}
				gens[g] = oldgensCurrent(t, m, dir, g)
				if g == 3 {
					// Two draining: within the cap, nobody killed yet.
					for _, pid := range append(slices.Clone(gens[1]), gens[2]...) {
						if !oldgensAlive(pid) {
							t.Fatalf("worker %d died after the second reload, within the cap; log:\n%s", pid, lastLines(m.logText(), 20))
						}
					}
				}
			}
			// The first generation was SIGKILLed at the third promote: its
			// workers are gone long before the 60 s stop timeout.
			e2etest.WaitFor(t, 10*time.Second, "the first generation's workers to die", func() bool {
				return !slices.ContainsFunc(gens[1], oldgensAlive)
			})
			a, err := m.status(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range a.Workers {
				if w.Generation == 1 {
					t.Errorf("status still lists worker %d of the killed generation 1: %+v", w.Pid, w)
				}
			}
			for _, pid := range gens[2] {
				if !oldgensAlive(pid) {
					t.Errorf("worker %d of generation 2 died; it should still be draining", pid)
				}
				if w := oldgensWorker(a, pid); w == nil || !w.Stopping || w.Current {
					t.Errorf("status of generation 2's worker %d: %+v, want listed as stopping", pid, w)
				}
			}
			log := m.logText()
			var warn []string
			for _, l := range strings.Split(log, "\n") {
				if strings.Contains(l, "too many old generations draining") {
					warn = append(warn, l)
				}
			}
			want := fmt.Sprintf("pids=\"[%d %d]\"", gens[1][0], gens[1][1])
			if len(warn) != 1 || !strings.Contains(warn[0], "level=WARN") || !strings.Contains(warn[0], "generation=1 ") ||
				!strings.Contains(warn[0], want) || !strings.Contains(warn[0], "max-old-generations=2") {
				t.Errorf("want one WARN line naming generation 1, %s and the cap; got %q\nlog:\n%s", want, warn, lastLines(log, 30))
			}
		})
	}
}

// oldgensCurrent waits until generation gen serves with two ready workers
// that ignore TERM (their files in dir exist), and returns their pids.
func oldgensCurrent(t *testing.T, m *master, dir string, gen int) []int {
	t.Helper()
	var pids []int
	e2etest.WaitFor(t, 20*time.Second, fmt.Sprintf("generation %d to serve", gen), func() bool {
		a, err := m.status(2 * time.Second)
		if err != nil || a.Master == nil || a.Master.Generation != gen || a.Master.State != "running" {
			return false
		}
		pids = pids[:0]
		for _, w := range a.Workers {
			if w.Current && w.Ready && w.Generation == gen {
				if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(w.Pid))); err != nil {
					return false
				}
				pids = append(pids, w.Pid)
			}
		}
		return len(pids) == 2
	})
	slices.Sort(pids)
	return pids
}

// oldgensAlive says whether pid is a live process: the master reaps its
// workers, so a dead one is gone from the process table (ESRCH), not a
// zombie for long.
func oldgensAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// oldgensKillAll SIGKILLs the process group of every worker that left its
// file in dir (one that did not still dies of a dead master's SIGTERM).
func oldgensKillAll(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	}
}

func oldgensWorker(a control.Answer, pid int) *control.Worker {
	for i := range a.Workers {
		if a.Workers[i].Pid == pid {
			return &a.Workers[i]
		}
	}
	return nil
}
