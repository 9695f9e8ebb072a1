//go:build !wired_clients

package main

import (
	"fmt"
	"io"
)

// Until internal/control and internal/demo exist the default build says so;
// -tags wired_clients builds the real calls in clients.go.

const demoWorkerCommand = "demo-worker"

func runControlClient(cmd string, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mworker: built without internal/control yet: it is being written")
	return 1
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "mworker: built without internal/demo yet: it is being written")
	return 1
}

func runDemoWorker(args []string, stdout, stderr io.Writer) int { return runDemo(args, stdout, stderr) }
