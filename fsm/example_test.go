package fsm_test

import (
	"fmt"
	"time"

	"github.com/mworker/mworker/fsm"
)

// A program drives the machine by hand, playing the part of the OS: it
// starts two workers, one exits and is restarted when its backoff timer
// fires, then SIGTERM stops everything and the machine says how to exit.
// A real caller forks, signals and arms timers where this one only prints.
func Example() {
	m, err := fsm.New(fsm.Config{
		Workers:      2,
		Path:         "/usr/bin/mworker",
		Argv:         []string{"mworker", "run", "-n", "2", "--", "server"},
		ReadyTimeout: 30 * time.Second,
		StopSignal:   fsm.SIGTERM,
		StopTimeout:  10 * time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	pid := 100
	armed := map[fsm.Timer]time.Duration{} // the caller's timer set
	status := -1

	// step feeds one event, carries out the actions in order, and feeds
	// back the outcome of each spawn before any other event.
	var step func(fsm.Event)
	step = func(ev fsm.Event) {
		fmt.Println(">", ev)
		var outcomes []fsm.Event
		for _, a := range m.Step(ev) {
			switch a := a.(type) {
			case fsm.Log:
				continue // a real caller hands these to log/slog
			case fsm.Spawn:
				pid++ // fork and exec here
				outcomes = append(outcomes, fsm.WorkerStarted{Generation: a.Generation, Slot: a.Slot, Pid: pid})
			case fsm.SetTimer:
				armed[a.Timer] = a.After
			case fsm.CancelTimer:
				delete(armed, a.Timer)
			case fsm.Exit:
				status = a.Status
			}
			fmt.Println("  ", a)
		}
		for _, o := range outcomes {
			step(o)
		}
	}
	// fire plays a timer that reached its deadline.
	fire := func(kind fsm.TimerKind) {
		for t := range armed {
			if t.Kind == kind {
				delete(armed, t)
				step(fsm.TimerFired{Timer: t})
				return
			}
		}
	}

	step(fsm.Start{})
	step(fsm.ChildExited{Pid: 101, Status: fsm.ExitStatus{Code: 1}})
	fire(fsm.TimerRestart) // 100 ms later
	step(fsm.SignalReceived{Signal: fsm.SIGTERM})
	step(fsm.ChildExited{Pid: 102, Status: fsm.ExitStatus{Code: 0}})
	step(fsm.ChildExited{Pid: 103, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}})
	fmt.Println("exit status", status) // the current worker that failed on the stop: 128 + 15

	// Output:
	// > start
	//    spawn gen=1 slot=0
	//    spawn gen=1 slot=1
	// > started gen=1 slot=0 pid=101
	// > started gen=1 slot=1 pid=102
	//    notify READY status="generation 1 ready"
	// > exited pid=101 status=exit:1
	//    set-timer restart gen=1 slot=0 after=100ms
	// > timer restart gen=1 slot=0
	//    spawn gen=1 slot=0
	// > started gen=1 slot=0 pid=103
	//    set-timer stable pid=103 after=1m0s
	//    set-timer quick pid=103 after=1s
	// > signal TERM
	//    notify STOPPING
	//    stop-listening
	//    kill TERM [103 102]
	//    set-timer kill-all after=10s
	// > exited pid=102 status=exit:0
	// > exited pid=103 status=signal:TERM
	//    cancel-timer stable pid=103
	//    cancel-timer quick pid=103
	//    exit 143
	// exit status 143
}
