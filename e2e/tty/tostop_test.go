package tty

import (
	"strings"
	"testing"
)

// TestTerminalTostop: with the terminal's TOSTOP set (stty tostop), a
// background process that writes to it gets SIGTTOU. The master, in the
// background once the worker has the terminal, still writes its log lines
// while the worker runs: it is neither stopped nor sent into a loop of
// SIGTTOU that it would forward to the worker, which is not stopped.
func TestTerminalTostop(t *testing.T) {
	t.Parallel()
	tm := startTerm(t, termOpts{tostop: true}, mworkerPath, "run", "--", "/bin/sh", "-c",
		`read l; echo "line:$l"; read l; echo "line:$l"`)
	at := tm.waitFor(`msg="worker started"`, 0)
	tm.write("one\n")
	at = tm.waitFor("line:one\n", at)
	tm.write("two\n")
	tm.waitFor("line:two\n", at)
	if st := tm.wait(); st != 0 {
		t.Fatalf("mworker exited %d, want 0; terminal:\n%s", st, tm.text())
	}
	if strings.Contains(tm.text(), "signal=TTOU") {
		t.Errorf("the master forwarded a SIGTTOU of its own writes; terminal:\n%s", tm.text())
	}
}
