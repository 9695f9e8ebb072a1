package e2etest

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestPollReportsWhichCame(t *testing.T) {
	n := 0
	if !Poll(time.Second, func() bool { n++; return n == 3 }) {
		t.Errorf("Poll gave up on a condition that held on the third call")
	}
	start := time.Now()
	if Poll(50*time.Millisecond, func() bool { return false }) {
		t.Errorf("Poll reported a condition that never held")
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("Poll gave up after %v, before its 50ms timeout", d)
	}
}

func TestBuildMakesAnExecutable(t *testing.T) {
	path, err := Build(t.TempDir(), "gendocs", "./internal/gendocs")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Build returned %s: %v, mode %v", path, err, fi.Mode())
	}
	if _, err := Build(t.TempDir(), "x", "./no/such/package"); err == nil {
		t.Errorf("Build of a missing package did not fail")
	}
}

func TestStartLoggedRecordsStatusAndOutput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		script string
		want   int
	}{{"echo out; echo err >&2; exit 3", 3}, {"kill -TERM $$", 143}} {
		log := dir + "/log"
		p, err := StartLogged(log, "/bin/sh", "-c", tc.script)
		if err != nil {
			t.Fatal(err)
		}
		<-p.Done
		if p.Status != tc.want {
			t.Errorf("%q: status %d, want %d", tc.script, p.Status, tc.want)
		}
		if tc.want == 3 {
			if b, _ := os.ReadFile(log); string(b) != "out\nerr\n" {
				t.Errorf("log %q, want stdout and stderr", b)
			}
		}
	}
}

func TestDocUnits(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	units, err := DocUnits(root, "app.service", "web.socket", "web.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(units["app.service"], UnitPrefix+"app.service\n") || !strings.Contains(units["app.service"], "ExecStart=") {
		t.Errorf("app.service as read:\n%s", units["app.service"])
	}
	if _, err := DocUnits(root, "no-such.service"); err == nil || !strings.Contains(err.Error(), "no-such.service") {
		t.Errorf("a missing unit: err %v, want one naming it", err)
	}
}

func TestReadProcReadsItself(t *testing.T) {
	p, ok := ReadProc(os.Getpid())
	if !ok || p.Pid != os.Getpid() || p.Ppid != os.Getppid() || p.Pgrp != syscall.Getpgrp() || p.State == 0 || p.Comm == "" {
		t.Fatalf("ReadProc(self) = %+v, %v", p, ok)
	}
	if _, ok := ReadProc(1 << 30); ok {
		t.Fatalf("ReadProc of no process said ok")
	}
	if len(Procs(func(q Proc) bool { return q.Pid == os.Getpid() })) != 1 {
		t.Fatalf("Procs does not find this process")
	}
}
