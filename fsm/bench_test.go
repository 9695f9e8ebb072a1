package fsm_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

// BenchmarkStep measures the core's cost per event, at 1, 64 and 1024
// workers. Each op is one cycle of events; ns/event and allocs/event are
// the cycle's cost divided by its events. Run it with
//
//	go test ./fsm -run XXX -bench Step -benchmem -count 3
//
// exit: a current worker exits, its restart timer fires, the new worker
// is reported started (3 events).
//
// reload: a reload signal (Exec), then the machine of the new image (New
// with the Exec's Handover) gets Start, N WorkerStarted (the last one
// promotes the generation), and the N old workers exit (2N+2 events).
//
// watchdog: with --watchdog, one worker's WATCHDOG=1, which re-arms its
// timer (1 event); every worker has pinged before.
func BenchmarkStep(b *testing.B) {
	for _, n := range []int{1, 64, 1024} {
		b.Run(fmt.Sprintf("exit/workers=%d", n), func(b *testing.B) { benchExit(b, n) })
		b.Run(fmt.Sprintf("reload/workers=%d", n), func(b *testing.B) { benchReload(b, n) })
		b.Run(fmt.Sprintf("watchdog/workers=%d", n), func(b *testing.B) { benchWatchdog(b, n) })
	}
}

func benchConfig(n int) fsm.Config {
	return fsm.Config{
		Workers:      n,
		Path:         "/usr/bin/mworker",
		Argv:         []string{"mworker", "run", "-n", fmt.Sprint(n), "--", "server"},
		ReadyTimeout: 30 * time.Second,
		StopSignal:   fsm.SIGTERM,
		StopTimeout:  10 * time.Second,
	}
}

// startFresh returns a running machine with n ready workers, pids 1..n.
func startFresh(b *testing.B, n int) *fsm.Machine {
	m, err := fsm.New(benchConfig(n))
	if err != nil {
		b.Fatal(err)
	}
	m.Step(fsm.Start{})
	for slot := range n {
		m.Step(fsm.WorkerStarted{Generation: 1, Slot: slot, Pid: slot + 1})
	}
	if m.State() != "running" {
		b.Fatalf("state %s after start", m.State())
	}
	return m
}

func benchExit(b *testing.B, n int) {
	m := startFresh(b, n)
	pids := make([]int, n) // pid of each slot
	for i := range pids {
		pids[i] = i + 1
	}
	next := n + 1
	const events = 3
	b.ReportAllocs()
	allocs := mallocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		slot := i % n
		acts := m.Step(fsm.ChildExited{Pid: pids[slot], Status: fsm.ExitStatus{Code: 1}})
		t := restartTimer(b, acts)
		m.Step(fsm.TimerFired{Timer: t})
		m.Step(fsm.WorkerStarted{Generation: 1, Slot: slot, Pid: next})
		pids[slot] = next
		next++
	}
	b.StopTimer()
	report(b, events, mallocs()-allocs)
	if got := len(m.Step(fsm.ControlRequest{ID: 1, Command: fsm.CmdStatus})[0].(fsm.Reply).Status.Workers); got != n {
		b.Fatalf("%d workers after the cycles, want %d", got, n)
	}
}

func restartTimer(b *testing.B, acts []fsm.Action) fsm.Timer {
	for _, a := range acts {
		if st, ok := a.(fsm.SetTimer); ok && st.Timer.Kind == fsm.TimerRestart {
			return st.Timer
		}
	}
	b.Fatalf("no restart timer in %v", acts)
	return fsm.Timer{}
}

func benchReload(b *testing.B, n int) {
	m := startFresh(b, n)
	live := make([]int, n)
	for i := range live {
		live[i] = i + 1
	}
	next := n + 1
	cfg := benchConfig(n)
	events := 2*n + 2
	b.ReportAllocs()
	allocs := mallocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		acts := m.Step(fsm.SignalReceived{Signal: fsm.SIGUSR2})
		exec, ok := acts[len(acts)-1].(fsm.Exec)
		if !ok {
			b.Fatalf("reload did not end in Exec: %v", acts)
		}
		c := cfg
		c.Argv = exec.Argv
		c.Resume = &exec.Handover
		nm, err := fsm.New(c)
		if err != nil {
			b.Fatal(err)
		}
		m = nm
		gen := spawnedGeneration(b, m.Step(fsm.Start{}))
		for slot := range n {
			m.Step(fsm.WorkerStarted{Generation: gen, Slot: slot, Pid: next + slot})
		}
		for _, pid := range live {
			m.Step(fsm.ChildExited{Pid: pid, Status: fsm.ExitStatus{Signal: fsm.SIGTERM}})
		}
		for slot := range live {
			live[slot] = next + slot
		}
		next += n
	}
	b.StopTimer()
	report(b, events, mallocs()-allocs)
	if m.State() != "running" {
		b.Fatalf("state %s after the reloads", m.State())
	}
}

func spawnedGeneration(b *testing.B, acts []fsm.Action) int {
	for _, a := range acts {
		if s, ok := a.(fsm.Spawn); ok {
			return s.Generation
		}
	}
	b.Fatalf("no spawn in %v", acts)
	return 0
}

func benchWatchdog(b *testing.B, n int) {
	cfg := benchConfig(n)
	cfg.Watchdog = 10 * time.Second
	m, err := fsm.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	m.Step(fsm.Start{})
	for slot := range n {
		m.Step(fsm.WorkerStarted{Generation: 1, Slot: slot, Pid: slot + 1})
		m.Step(fsm.WorkerWatchdog{Pid: slot + 1})
	}
	b.ReportAllocs()
	allocs := mallocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		acts := m.Step(fsm.WorkerWatchdog{Pid: i%n + 1})
		if len(acts) != 1 {
			b.Fatalf("a ping gave %v, want one SetTimer", acts)
		}
	}
	b.StopTimer()
	report(b, 1, mallocs()-allocs)
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// report adds the per-event figures the targets are written in.
func report(b *testing.B, events int, allocs uint64) {
	total := float64(b.N) * float64(events)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/event")
	b.ReportMetric(float64(allocs)/total, "allocs/event")
}
