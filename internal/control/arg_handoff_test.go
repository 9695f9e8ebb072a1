package control

import (
	"syscall"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// A queued request keeps its argument across the re-exec: the entry that
// PrepareExec writes for it reads back with the same command and argument.
func TestQueuedEntryKeepsTheArgument(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"", "4", "a:b,c d"} {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer syscall.Close(fds[1])
		entry := queuedEntry(Request{ID: 5, Command: fsm.CmdStatus, Arg: arg}, fds[0])
		reqs, err := importQueued(entry)
		if err != nil {
			t.Fatalf("%q: %v", entry, err)
		}
		if len(reqs) != 1 || reqs[0].ID != 5 || reqs[0].Command != fsm.CmdStatus || reqs[0].Arg != arg {
			t.Errorf("%q read back as %+v, want status with the argument %q", entry, reqs, arg)
		}
		for _, r := range reqs {
			r.Conn.Close()
		}
	}
}
