//go:build !wired_demo

package main

import (
	"fmt"
	"io"
)

// Until internal/demo exists the default build says so; -tags wired_demo
// builds the real calls in demo.go.

func runDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mworker: this build has no demo yet: internal/demo is being written")
	return 1
}

func runDemoWorker(args []string, stdout, stderr io.Writer) int { return runDemo(args, stdout, stderr) }
