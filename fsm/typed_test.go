package fsm

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Every trigger of the table, fired with every kind of event in every
// state a machine lives in, bypassing classify: a path the table does not
// mean (a new route to an existing trigger) must log, never panic. Before
// the callbacks took their events typed, 16 of them type-asserted the
// machine's current event: this test saw 459 panics on that code.
func TestCallbackOfAnotherEventDoesNotPanic(t *testing.T) {
	triggers := []trigger{
		trigStart, trigReload, trigSoftStop, trigTerminate, trigForward, trigSpawned, trigSpawnFailed,
		trigReady, trigFirstReady, trigGenerationReady, trigGenerationFailed, trigExited, trigOrphan,
		trigRunEnded, trigAllGone, trigNoChildren, trigStopAgain, trigTerminateAgain, trigExecFailed,
		trigRestart, trigStable, trigWindowClosed, trigQuickOver, trigKillDue, trigStatus, trigScale,
		trigRestartOne, trigReplaced, trigReplaceFailed, trigBatchReady, trigBatchDrained, trigBadRequest, trigNoise,
		trigWatchdogPing, trigWatchdogFailed,
	}
	events := []Event{
		Start{}, SignalReceived{Signal: SIGWINCH}, WorkerStarted{Generation: 9, Slot: 0, Pid: 999},
		SpawnFailed{Generation: 9, Slot: 0}, WorkerReady{Pid: 999}, ChildExited{Pid: 999}, NoChildren{},
		ExecFailed{Err: "x"}, TimerFired{Timer: Timer{Kind: TimerKillWorker, Pid: 999}},
		ControlRequest{ID: 1, Command: CmdScale, Arg: "2"}, ImageChanged{}, WorkerWatchdog{Pid: 999},
		WorkerWatchdog{Pid: 101, Trigger: true},
	}
	// Machines in Running, AwaitingReady (a reload in place) and Exiting.
	setups := map[string]func(m *Machine){
		"running": func(m *Machine) {},
		"reloading": func(m *Machine) {
			m.Step(SignalReceived{Signal: SIGUSR2})
		},
		"exiting": func(m *Machine) {
			m.Step(SignalReceived{Signal: SIGTERM})
		},
	}
	for name, setup := range setups {
		for _, trig := range triggers {
			for _, ev := range events {
				m, err := New(Config{Workers: 2, Path: "/bin/mworker", Argv: []string{"mworker", "run", "--", "x"},
					ReadyTimeout: time.Second, StopSignal: SIGTERM, StopTimeout: time.Second, Reexec: ReexecNever, Watchdog: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				m.Step(Start{})
				m.Step(WorkerStarted{Generation: 1, Slot: 0, Pid: 101})
				m.Step(WorkerStarted{Generation: 1, Slot: 1, Pid: 102})
				setup(m)
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Errorf("%s: trigger %s with %v panicked: %v", name, trig, ev, r)
						}
					}()
					m.out = nil
					m.ev = ev
					m.fire(trig)
					m.settle()
				}()
			}
		}
	}
	// And one such path says so in the log.
	m, _ := New(Config{Workers: 1, Path: "/bin/mworker", Argv: []string{"mworker", "run", "--", "x"},
		ReadyTimeout: time.Second, StopSignal: SIGTERM, StopTimeout: time.Second})
	m.Step(Start{})
	m.out = nil
	m.ev = SignalReceived{Signal: SIGWINCH}
	m.fire(trigSpawned)
	if got := fmt.Sprint(m.out); !strings.Contains(got, "does not take") || !strings.Contains(got, "WorkerStarted") {
		t.Errorf("a WorkerStarted transition fed a signal logged %s, want an error naming what it takes", got)
	}
}
