package main

import (
	"io"

	"github.com/mworker/mworker/internal/demo"
)

// runDemo is "mworker demo": a master of built-in HTTP workers.
func runDemo(args []string, stdout, stderr io.Writer) int { return demo.Run(args, stdout, stderr) }

// runDemoWorker is the hidden command the demo master runs as its workers;
// it is not part of the manual.
func runDemoWorker(args []string, stdout, stderr io.Writer) int {
	return demo.Worker(args, stdout, stderr)
}
