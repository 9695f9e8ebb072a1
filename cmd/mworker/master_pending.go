//go:build !wired_adapter

package main

import (
	"fmt"
	"os"

	"github.com/mworker/mworker/osadapter"
)

// Until osadapter.Run exists the default build says so; -tags wired_adapter
// builds the real call in master.go.
func startMaster(cfg osadapter.Config) int {
	fmt.Fprintln(os.Stderr, "mworker: built without the adapter yet: osadapter.Run is being written")
	return 1
}
