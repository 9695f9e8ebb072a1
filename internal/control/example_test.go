package control_test

import (
	"encoding/json"
	"os"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/internal/control"
)

// The answer to status during a reload's wait for readiness: generation 4
// is starting, generation 3 still serves; the reload before it, of
// generation 3, succeeded; slot 1 was restarted twice.
func ExampleWriteStatus() {
	reply := fsm.Reply{ID: 9, OK: true, Status: &fsm.Status{
		State: "reloading", Generation: 3, Size: 2, Reloads: 2,
		Workers: []fsm.WorkerStatus{
			{Pid: 2041, Generation: 3, Slot: 0, Current: true, Ready: true},
			{Pid: 2042, Generation: 3, Slot: 1, Current: true, Ready: true},
			{Pid: 2101, Generation: 4, Slot: 0},
		},
		ReloadTrigger: "SIGHUP",
		LastReload: &fsm.ReloadOutcome{Seq: 2, Result: fsm.ReloadSuccess, Trigger: "control client pid 811",
			Generation: 3, Previous: 2, Pids: []int{2041, 2042}, Old: []int{1901, 1902}},
		Slots: []fsm.SlotStatus{{Slot: 0}, {Slot: 1, Restarts: 2, Failures: 2, Backoff: 200 * time.Millisecond}},
	}}
	start := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	facts := control.Facts{MasterPid: 2000, Uptime: map[int]time.Duration{
		2041: 95 * time.Minute, 2042: 95 * time.Minute, 2101: 300 * time.Millisecond,
	},
		Version: "v1.4.0", StartTime: start, MasterUptime: 3 * time.Hour,
		Listeners:          []control.Socket{{Name: "http", Address: "tcp://0.0.0.0:8080", Fd: 3}},
		StatusText:         map[int]string{2041: "serving 12 connections", 2042: "serving 9 connections"},
		LastReloadTime:     start.Add(85 * time.Minute),
		LastReloadDuration: 1230 * time.Millisecond,
	}
	control.WriteStatus(os.Stdout, control.NewAnswer(reply, facts))
	// Output:
	// master pid 2000, reloading, generation 3, 3 live workers (2 desired), 2 reloads (0 failed)
	// mworker v1.4.0, started 2026-01-02T15:04:05Z, up 3h0m0s
	// listeners: http=tcp://0.0.0.0:8080 (fd 3)
	// reloading (SIGHUP)
	// last reload: #2 success (control client pid 811) at 2026-01-02T16:29:05Z in 1230 ms: generation 3 ready
	// slot 1: 2 restarts, 2 failed in a row, backoff 200ms
	// PID   GEN  SLOT  ROLE     READY  UPTIME   STATUS
	// 2041  3    0     current  yes    1h35m0s  serving 12 connections
	// 2042  3    1     current  yes    1h35m0s  serving 9 connections
	// 2101  4    0     new      no     0s
}

// The same facts in the JSON answer (status --json): the master's new
// fields, by their stable names.
func ExampleNewAnswer() {
	reply := fsm.Reply{ID: 9, OK: true, Status: &fsm.Status{
		State: "running", Generation: 3, Size: 1, Reloads: 2, FailedReloads: 1,
		Workers: []fsm.WorkerStatus{{Pid: 2041, Generation: 3, Slot: 0, Current: true, Ready: true}},
		LastReload: &fsm.ReloadOutcome{Seq: 3, Result: fsm.ReloadFailure, Trigger: "SIGUSR2",
			Reason: "worker 2101 (slot 0 of generation 4) exited with exit:1 before the generation was ready", Generation: 4, Previous: 3},
		ReloadQueued: true,
		Slots:        []fsm.SlotStatus{{Slot: 0, Restarts: 1, Failures: 1, Backoff: 100 * time.Millisecond, RestartPending: true}},
	}}
	start := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	facts := control.Facts{MasterPid: 2000, Version: "v1.4.0", StartTime: start, MasterUptime: time.Hour,
		Listeners:          []control.Socket{{Name: "http", Address: "tcp://0.0.0.0:8080", Fd: 3}},
		StatusText:         map[int]string{2041: "idle"},
		LastReloadTime:     start.Add(50 * time.Minute),
		LastReloadDuration: 2500 * time.Millisecond,
	}
	b, _ := json.MarshalIndent(control.NewAnswer(reply, facts).Master, "", "  ")
	os.Stdout.Write(append(b, '\n'))
	// Output:
	// {
	//   "pid": 2000,
	//   "state": "running",
	//   "generation": 3,
	//   "size": 1,
	//   "reloads": 2,
	//   "failed_reloads": 1,
	//   "dropped_log_lines": 0,
	//   "dropped_worker_lines": 0,
	//   "goroutines": 0,
	//   "version": "v1.4.0",
	//   "start_time": "2026-01-02T15:04:05Z",
	//   "uptime_seconds": 3600,
	//   "listeners": [
	//     {
	//       "name": "http",
	//       "address": "tcp://0.0.0.0:8080",
	//       "fd": 3
	//     }
	//   ],
	//   "reload_queued": true,
	//   "last_reload": {
	//     "result": "failure",
	//     "reason": "worker 2101 (slot 0 of generation 4) exited with exit:1 before the generation was ready",
	//     "trigger": "SIGUSR2",
	//     "generation": 4,
	//     "previous": 3,
	//     "seq": 3,
	//     "time": "2026-01-02T15:54:05Z",
	//     "duration_seconds": 2.5
	//   },
	//   "slots": [
	//     {
	//       "slot": 0,
	//       "restarts": 1,
	//       "failures": 1,
	//       "backoff_seconds": 0.1,
	//       "restart_pending": true
	//     }
	//   ]
	// }
}
