package control_test

import (
	"os"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
)

// The answer to status during a reload's wait for readiness: generation 4
// is starting, generation 3 still serves.
func ExampleWriteStatus() {
	reply := fsm.Reply{ID: 9, OK: true, Status: &fsm.Status{
		State: "reloading", Generation: 3, Size: 2, Reloads: 2,
		Workers: []fsm.WorkerStatus{
			{Pid: 2041, Generation: 3, Slot: 0, Current: true, Ready: true},
			{Pid: 2042, Generation: 3, Slot: 1, Current: true, Ready: true},
			{Pid: 2101, Generation: 4, Slot: 0},
		},
	}}
	facts := control.Facts{MasterPid: 2000, Uptime: map[int]time.Duration{
		2041: 95 * time.Minute, 2042: 95 * time.Minute, 2101: 300 * time.Millisecond,
	}}
	control.WriteStatus(os.Stdout, control.NewAnswer(reply, facts))
	// Output:
	// master pid 2000, reloading, generation 3, 3 live workers (2 desired), 2 reloads (0 failed)
	// PID   GEN  SLOT  ROLE     READY  UPTIME
	// 2041  3    0     current  yes    1h35m0s
	// 2042  3    1     current  yes    1h35m0s
	// 2101  4    0     new      no     0s
}
