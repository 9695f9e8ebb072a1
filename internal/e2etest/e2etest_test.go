package e2etest

import (
	"os"
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
