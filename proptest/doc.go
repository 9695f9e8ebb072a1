// Package proptest holds property-based tests of the fsm core, written with
// pgregory.net/rapid. It imports fsm only, never the OS adapter: every child,
// signal, timer and exec outcome is simulated.
//
// The main test (TestMachine) drives a Machine with random event sequences
// through rapid's t.Repeat, compares every step with a small reference model
// (sets of live pids per generation, armed timers, open control requests),
// and checks DESIGN.md's eight invariants after each step. A successful exec
// continues in a fresh Machine built with Config.Resume, as the real master
// does. FuzzMachine runs the same property under `go test -fuzz`.
//
// The default run executes 1,000 sequences (see TestMain); -rapid.checks and
// -rapid.steps change that, and a failure leaves a replay file under
// testdata/rapid/ that rapid reruns first.
package proptest
