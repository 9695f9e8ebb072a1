//go:build wired_clients

package main

import (
	"io"

	"github.com/mworker/mworker/internal/control"
	"github.com/mworker/mworker/internal/demo"
)

// demoWorkerCommand is the hidden command the demo master runs as its
// workers; it is not part of the manual.
const demoWorkerCommand = "demo-worker"

func runControlClient(cmd string, args []string, stdout, stderr io.Writer) int {
	return control.RunClient(cmd, args, stdout, stderr)
}

func runDemo(args []string, stdout, stderr io.Writer) int { return demo.Run(args, stdout, stderr) }

func runDemoWorker(args []string, stdout, stderr io.Writer) int {
	return demo.Worker(args, stdout, stderr)
}
