//go:build startsigcheck

// Built only with -tags startsigcheck (scripts/arm64-qemu.sh): it needs a
// test binary with its symbol table (go test -c; go test strips it) and a
// start the script sets, so an ordinary go test has nothing to run it with.
// cmd/mworker's TestWorkersInheritSignalsAndDirectory checks startSignals
// natively in CI, through a built mworker.

package osadapter

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// startSignals reads the runtime's record of the start (the symbols, their
// sizes, /proc/self/mem at the load address) without an error. When
// OSADAPTER_TEST_START says how the process was started ("ign=N,N;blk=N,N",
// as scripts/arm64-qemu.sh starts it), what it reads must match.
func TestStartSignalsReadsTheRuntime(t *testing.T) {
	mask, ignored, err := startSignals()
	spec, ok := os.LookupEnv("OSADAPTER_TEST_START")
	if errors.Is(err, errNoSymbols) && !ok {
		// go test links its binary without a symbol table; go test -c
		// (scripts/arm64-qemu.sh) and go build keep it.
		t.Skip("this test binary has no symbol table (go test strips it): build it with go test -c")
	}
	if err != nil {
		t.Fatalf("startSignals: %v", err)
	}
	if !ok {
		t.Logf("mask %x, ignored %v (OSADAPTER_TEST_START unset: nothing to compare with)", mask, ignored)
		return
	}
	var wantIgn []syscall.Signal
	var wantBlk uint64
	for _, part := range strings.Split(spec, ";") {
		k, v, _ := strings.Cut(part, "=")
		for _, f := range strings.Split(v, ",") {
			if f == "" {
				continue
			}
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 64 {
				t.Fatalf("OSADAPTER_TEST_START=%q: bad signal %q", spec, f)
			}
			switch k {
			case "ign":
				wantIgn = append(wantIgn, syscall.Signal(n))
			case "blk":
				wantBlk |= 1 << (n - 1)
			default:
				t.Fatalf("OSADAPTER_TEST_START=%q: bad key %q", spec, k)
			}
		}
	}
	slices.Sort(wantIgn)
	if mask != wantBlk || !slices.Equal(ignored, wantIgn) {
		t.Fatalf("startSignals: mask %x, ignored %v; started with mask %x, ignored %v", mask, ignored, wantBlk, wantIgn)
	}
}
