// Package proptest holds property-based tests of the fsm core, written with
// pgregory.net/rapid. It imports fsm only, never the OS adapter: every child,
// signal, timer and exec outcome is simulated.
//
// TestMachine drives a Machine with random event sequences through rapid's
// t.Repeat: signals of every route, control requests, spawn outcomes, ready
// reports, exits of current, old, new, dead and unknown pids, ECHILD, timers
// armed, cancelled and never set, and nonsense of every kind. Each step is
// compared with a small reference model (model_test.go: sets of live pids
// per generation, armed timers, open requests): the spawns, signals,
// notifications, replies, and the timers of every kind set (with their
// durations; a jittered restart delay within its range) and cancelled, as
// multisets, then the set of armed timers, which the model predicts by its
// own rules rather than reading it from the actions. The "" check reads the
// accumulated trace for the invariants of docs/design.md, section
// "Invariants" (trace_test.go). When the machine emits Exec, the test
// either feeds ExecFailed or, as the real master does, builds a fresh
// Machine with Config.Resume set to the handover and carries the live
// children, timers and requests across. Every machine's steps are replayed
// on a fresh one and must give the same actions. A run ends by stopping the
// master and reaping every child: it must exit once, with the status
// docs/design.md gives ("Exit status of the master"), every request
// answered.
//
// A failure message names the invariant it breaks by its number in
// docs/design.md ("invariant 3: ..."); TestDesignInvariants fails when the
// numbers the messages use and those the contract lists differ.
//
// TestReloadArgv and TestStepNeverPanics are plain rapid properties;
// regress_test.go keeps the cases rapid found, shrunk, as named tests.
//
// The default run is 1,000 sequences per property (TestMain), each of at
// most 200 events, in about a second. For a longer campaign:
//
//	go test ./proptest -run TestMachine -rapid.checks=100000
//	go test ./proptest -run '^$' -fuzz=FuzzMachine -fuzztime=1m
//
// A failure prints the last steps and leaves a replay file under
// testdata/rapid/ that rapid runs first next time (-rapid.failfile).
package proptest
