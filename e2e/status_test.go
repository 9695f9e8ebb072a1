package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mworker/mworker/internal/e2etest"
)

// richStatus is the part of a status answer that issue 14 added, decoded
// here on its own so that the test checks the wire names
// (docs/design.md, "Control socket").
type richStatus struct {
	OK     bool `json:"ok"`
	Master struct {
		Generation    int     `json:"generation"`
		Version       string  `json:"version"`
		StartTime     string  `json:"start_time"`
		UptimeSeconds float64 `json:"uptime_seconds"`
		Listeners     []struct {
			Name    string `json:"name"`
			Address string `json:"address"`
			Fd      int    `json:"fd"`
		} `json:"listeners"`
		Reloading    string `json:"reloading"`
		ReloadQueued *bool  `json:"reload_queued"`
		LastReload   *struct {
			Result          string  `json:"result"`
			Reason          string  `json:"reason"`
			Trigger         string  `json:"trigger"`
			Generation      int     `json:"generation"`
			Previous        int     `json:"previous"`
			Pids            []int   `json:"pids"`
			OldPids         []int   `json:"old_pids"`
			Seq             int     `json:"seq"`
			Time            string  `json:"time"`
			DurationSeconds float64 `json:"duration_seconds"`
		} `json:"last_reload"`
		Slots []struct {
			Slot           int     `json:"slot"`
			Restarts       int     `json:"restarts"`
			Failures       int     `json:"failures"`
			BackoffSeconds float64 `json:"backoff_seconds"`
			RestartPending bool    `json:"restart_pending"`
		} `json:"slots"`
	} `json:"master"`
	Workers []struct {
		Pid        int    `json:"pid"`
		Current    bool   `json:"current"`
		StatusText string `json:"status_text"`
	} `json:"workers"`
}

func (m *master) askRichStatus() richStatus {
	m.t.Helper()
	var s richStatus
	c, err := net.DialTimeout("unix", m.ctlSock, 5*time.Second)
	if err != nil {
		m.t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "status\n"); err != nil {
		m.t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil && len(line) == 0 {
		m.t.Fatal(err)
	}
	if err := json.Unmarshal(line, &s); err != nil || !s.OK {
		m.t.Fatalf("bad status answer %q: %v", line, err)
	}
	return s
}

// Issue 14: after a reload that succeeds and one that is rolled back,
// status says how each ended, what triggered it, when and how long it
// took; it names the version, the start time, the listeners and the
// workers' STATUS= texts; mworker reload prints what happened; the log
// names each reload's trigger and the rolled-back generation's workers
// as such.
func TestStatusAfterReloadAndRollback(t *testing.T) {
	dir := t.TempDir()
	modeFile := filepath.Join(dir, "mode")
	setMode := func(mode string) {
		t.Helper()
		if err := os.WriteFile(modeFile, []byte(mode+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A worker of mode "exit" exits 1 before READY=1: its generation is
	// rolled back. Others serve (READY=1 with STATUS=serving).
	script := filepath.Join(dir, "worker.sh")
	if err := e2etest.WriteExecutable(script, fmt.Sprintf(`#!/bin/sh
[ "$(cat '%s')" = exit ] && exit 1
exec '%s' demo-worker
`, modeFile, mworkerPath)); err != nil {
		t.Fatal(err)
	}
	setMode("serve")
	m := startMaster(t, dir, []string{"-n", "2", "--ready", "notify", "--stop-timeout", "5s"}, "/bin/sh", script)
	first := m.waitSettled(2, 15*time.Second)
	s := m.askRichStatus()
	start, err := time.Parse(time.RFC3339Nano, s.Master.StartTime)
	switch {
	case err != nil || time.Since(start) < 0 || time.Since(start) > time.Minute:
		t.Errorf("start_time %q (%v), want the master's start", s.Master.StartTime, err)
	case s.Master.Version == "":
		t.Error("no version")
	case len(s.Master.Listeners) != 1 || s.Master.Listeners[0].Address != "unix://"+m.httpSock || s.Master.Listeners[0].Fd != 3:
		t.Errorf("listeners %+v, want the unix socket as fd 3", s.Master.Listeners)
	case s.Master.LastReload != nil || s.Master.ReloadQueued == nil || *s.Master.ReloadQueued || len(s.Master.Slots) != 2:
		t.Errorf("before any reload: last_reload %+v, reload_queued %v, slots %+v", s.Master.LastReload, s.Master.ReloadQueued, s.Master.Slots)
	}
	// STATUS= arrives with READY=1, but on its own goroutine: poll.
	if !e2etest.Poll(5*time.Second, func() bool {
		s = m.askRichStatus()
		return len(s.Workers) == 2 && s.Workers[0].StatusText == "serving" && s.Workers[1].StatusText == "serving"
	}) {
		t.Errorf("workers' status_text: %+v, want \"serving\"", s.Workers)
	}

	// A reload that succeeds, by mworker reload.
	code, out, errOut := m.ctl("reload")
	re := regexp.MustCompile(`^generation 2 ready in \d+ ms \(pids (\d+) (\d+)\); generation 1 stopping\n$`)
	if code != 0 || !re.MatchString(out) {
		t.Fatalf("mworker reload: exit %d, out %q, err %q; want %v", code, out, errOut, re)
	}
	s = m.askRichStatus()
	lr := s.Master.LastReload
	if lr == nil || lr.Result != "success" || lr.Generation != 2 || lr.Previous != 1 || lr.Seq != 1 || len(lr.Pids) != 2 ||
		!strings.HasPrefix(lr.Trigger, "control client pid ") || lr.DurationSeconds <= 0 || lr.Time == "" {
		t.Fatalf("last_reload after a success: %+v", lr)
	}
	if got := re.FindStringSubmatch(out)[1:]; got[0] != strconv.Itoa(lr.Pids[0]) || got[1] != strconv.Itoa(lr.Pids[1]) {
		t.Errorf("reload printed pids %v, status says %v", got, lr.Pids)
	}
	if len(lr.OldPids) != 2 || lr.OldPids[0] != first.currentPids()[0] && lr.OldPids[1] != first.currentPids()[0] {
		t.Errorf("old_pids %v, want %v", lr.OldPids, first.currentPids())
	}

	// One rolled back, by SIGHUP.
	m.waitSettled(2, 15*time.Second)
	setMode("exit")
	if err := m.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !e2etest.Poll(15*time.Second, func() bool {
		s = m.askRichStatus()
		return s.Master.LastReload != nil && s.Master.LastReload.Seq == 2
	}) {
		t.Fatalf("the SIGHUP reload did not end: %+v", s.Master)
	}
	lr = s.Master.LastReload
	if lr.Result != "failure" || lr.Trigger != "SIGHUP" || lr.Generation != 3 || lr.Previous != 2 || s.Master.Generation != 2 ||
		!strings.Contains(lr.Reason, "exited with exit:1 before the generation was ready") {
		t.Errorf("last_reload after a rollback: %+v (serving %d)", lr, s.Master.Generation)
	}

	// A rollback by mworker reload says why, once.
	code, _, errOut = m.ctl("reload")
	if code != 1 || !strings.HasPrefix(errOut, "mworker reload: failed: worker ") || strings.Count(errOut, "failed") != 1 {
		t.Errorf("failed mworker reload: exit %d, stderr %q", code, errOut)
	}

	// The log names each trigger and the rolled-back generation's workers.
	var logText string
	if !e2etest.Poll(10*time.Second, func() bool {
		b, _ := os.ReadFile(m.log)
		logText = string(b)
		return strings.Count(logText, "worker of a rolled-back generation exited") >= 2
	}) {
		t.Errorf("the rolled-back workers' exits are not named so; log:\n%s", lastLines(logText, 40))
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`msg="reloading: starting the new generation" trigger="control client pid \d+" generation=2`),
		regexp.MustCompile(`msg="reloading: starting the new generation" trigger=SIGHUP generation=3`),
		regexp.MustCompile(`failed_generation=3 generation=2`),
	} {
		if !want.MatchString(logText) {
			t.Errorf("no log line matches %v", want)
		}
	}
	if strings.Contains(logText, `msg="old worker exited" pid=`) && regexp.MustCompile(`msg="old worker exited" pid=\d+ generation=3 `).MatchString(logText) {
		t.Error("a worker of rolled-back generation 3 is logged as an old worker")
	}
}
