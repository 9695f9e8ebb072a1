package chaos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/control"
)

// stormWorker starts at once and stops on SIGTERM, so that a reload's cost
// is the master's own.
var stormWorker = []string{"sh", "-c", `trap "exit 0" TERM; while :; do sleep 0.05; done`}

const (
	// stormSpread is the time over which the clients and the signals of
	// a storm start, evenly spaced.
	stormSpread = 3 * time.Second
	// stormTimeout is each client's --timeout: far more than the storm
	// takes, so that a client without an answer is one the master lost,
	// not one that gave up.
	stormTimeout = 40 * time.Second
)

// stormOutcome is what one reload client of a storm got.
type stormOutcome struct {
	ok       bool   // {"ok":true}
	answered bool   // a JSON answer, ok or not
	reason   string // the answer's error, or why there was no answer
}

// stormTally counts the outcomes of a storm.
type stormTally struct {
	mu         sync.Mutex
	ok         int
	failed     map[string]int // answered {"ok":false}, by reason
	unanswered map[string]int // no answer, by the client's error
}

func (s *stormTally) add(o stormOutcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case o.ok:
		s.ok++
	case o.answered:
		s.failed[o.reason]++
	default:
		s.unanswered[o.reason]++
	}
}

func (s *stormTally) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	count := func(m map[string]int) (int, string) {
		n := 0
		var lines []string
		for r, k := range m {
			n += k
			lines = append(lines, fmt.Sprintf("    %d × %s", k, r))
		}
		sort.Strings(lines)
		return n, strings.Join(lines, "\n")
	}
	nf, failed := count(s.failed)
	nu, unanswered := count(s.unanswered)
	return fmt.Sprintf("%d ok, %d failed, %d unanswered\n  failed:\n%s\n  unanswered:\n%s", s.ok, nf, nu, failed, unanswered)
}

func (s *stormTally) bad() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.failed) > 0 || len(s.unanswered) > 0
}

// stormRun starts client(i) for i in [0, n) and n SIGUSR2s to the master,
// both evenly spread over stormSpread, and waits for every client.
func stormRun(t *testing.T, m *master, n int, client func(i int) stormOutcome) *stormTally {
	t.Helper()
	tally := &stormTally{failed: map[string]int{}, unanswered: map[string]int{}}
	step := stormSpread / time.Duration(n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(start.Add(time.Duration(i) * step)))
			tally.add(client(i))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Offset by half a step from the clients.
		for i := range n {
			time.Sleep(time.Until(start.Add(time.Duration(i)*step + step/2)))
			syscall.Kill(m.p.Pid, syscall.SIGUSR2)
		}
	}()
	wg.Wait()
	return tally
}

// stormMaster starts a master of 4 storm workers and waits for them.
func stormMaster(t *testing.T) *master {
	m := startMaster(t, append([]string{"-n", "4", "--ready", "immediate", "--"}, stormWorker...)...)
	m.waitServing(4, 30*time.Second)
	return m
}

// stormCheck fails the test unless every client got {"ok":true}, and
// the master still serves 4 workers.
func stormCheck(t *testing.T, m *master, tally *stormTally) {
	t.Helper()
	t.Logf("storm: %v", tally)
	if m.exited() {
		t.Fatalf("the master exited (status %d) during the storm; log:\n%s", m.p.Status, lastLines(m.logText(), 40))
	}
	if tally.bad() {
		t.Errorf("every reload client must get a successful answer: %v\nmaster log:\n%s", tally, lastLines(m.logText(), 40))
	}
	m.waitServing(4, 30*time.Second)
}

// 200 reload clients and 200 SIGUSR2 in about 3 s against -n 4: every
// client gets an answer, and with healthy workers every answer is a
// success. The clients go through the path of `mworker reload`
// (control.RunClient); each answer is counted as ok, failed (with the
// master's reason) or unanswered (the client's error). One client in ten
// asks for the status first, which must be answered too: a status read
// during a re-exec is handed over to the next image to be fed.
func TestStormReloadClientsAllAnswered(t *testing.T) {
	t.Parallel()
	m := stormMaster(t)
	tally := stormRun(t, m, 200, func(i int) stormOutcome {
		if i%10 == 0 {
			if o := stormAsk(m, "status"); !o.ok {
				o.reason = "status: " + o.reason
				return o
			}
		}
		return stormAsk(m, "reload")
	})
	stormCheck(t, m, tally)
}

// stormAsk runs `mworker CMD --json` through control.RunClient.
func stormAsk(m *master, cmd string) stormOutcome {
	var out, errb bytes.Buffer
	code := control.RunClient(cmd, []string{"--control", m.ctl, "--json", "--timeout", stormTimeout.String()}, &out, &errb)
	var a control.Answer
	if err := json.Unmarshal(out.Bytes(), &a); err != nil {
		return stormOutcome{reason: strings.TrimSpace(errb.String())}
	}
	if code != 0 || !a.OK {
		return stormOutcome{answered: true, reason: a.Error}
	}
	return stormOutcome{ok: true, answered: true}
}

// The same storm with 100 real `mworker reload` processes, as systemd's
// ExecReload runs them: each must exit 0.
func TestStormReloadProcessesExitZero(t *testing.T) {
	t.Parallel()
	m := stormMaster(t)
	tally := stormRun(t, m, 100, func(int) stormOutcome {
		var errb bytes.Buffer
		cmd := exec.Command(mworkerPath, "reload", "--control", m.ctl, "--timeout", stormTimeout.String())
		cmd.Stderr = &errb
		err := cmd.Run()
		if err == nil {
			return stormOutcome{ok: true, answered: true}
		}
		msg := strings.TrimSpace(errb.String())
		if _, reason, ok := strings.Cut(msg, "failed: "); ok && strings.HasPrefix(msg, "mworker reload: failed: ") {
			return stormOutcome{answered: true, reason: reason}
		}
		return stormOutcome{reason: fmt.Sprintf("%v: %s", err, msg)}
	})
	stormCheck(t, m, tally)
}
