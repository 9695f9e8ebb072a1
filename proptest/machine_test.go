package proptest

import (
	"flag"
	"os"
	"testing"

	"pgregory.net/rapid"
)

// TestMain makes the default run the figure of docs/design.md, section
// "Invariants": 1,000 random lives of the master unless -rapid.checks or
// RAPID_CHECKS says otherwise, and about 100 actions per life unless
// -rapid.steps or RAPID_STEPS does.
func TestMain(m *testing.M) {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	defaults := map[string]struct{ env, value string }{
		"rapid.checks": {"RAPID_CHECKS", "1000"},
		"rapid.steps":  {"RAPID_STEPS", "100"},
	}
	for name, d := range defaults {
		if _, env := os.LookupEnv(d.env); !set[name] && !env {
			if err := flag.Set(name, d.value); err != nil {
				panic(err)
			}
		}
	}
	os.Exit(m.Run())
}

// TestMachine checks the eight invariants of docs/design.md (section
// "Invariants", numbered as its failure messages number them) and the
// reference model over random event sequences, across simulated execs.
func TestMachine(t *testing.T) {
	before := stats.sequences.Load()
	rapid.Check(t, machineProperty)
	n := stats.sequences.Load() - before
	if n == 0 {
		t.Fatal("no sequence ran")
	}
	t.Logf("sequences %d, events %d (mean %.1f, max %d), execs ok %d failed %d, promotions %d, rollbacks %d, exits %d (restart limit %d), generations killed for the cap %d, scales %d, restarts of one worker done %d failed %d, batches retired %d, failed rolling reloads that kept batches %d, shutdown delays begun %d",
		n, stats.events.Load(), float64(stats.events.Load())/float64(n), stats.maxLen.Load(),
		stats.execOK.Load(), stats.execFailed.Load(), stats.promotions.Load(), stats.rollbacks.Load(), stats.exits.Load(), stats.limits.Load(), stats.capKills.Load(),
		stats.scales.Load(), stats.restarted.Load(), stats.restartFailed.Load(), stats.batches.Load(), stats.batchesKept.Load(), stats.delays.Load())
	t.Logf("watchdog: %d pings armed a timer, %d hung workers stopped", watchdogStats.pings.Load(), watchdogStats.hangs.Load())
}

// FuzzMachine is TestMachine's property for `go test -fuzz=FuzzMachine`.
func FuzzMachine(f *testing.F) {
	f.Fuzz(rapid.MakeFuzz(machineProperty))
}
