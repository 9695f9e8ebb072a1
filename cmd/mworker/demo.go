//go:build wired_demo

package main

import (
	"io"

	"github.com/mworker/mworker/internal/demo"
)

func runDemo(args []string, stdout, stderr io.Writer) int { return demo.Run(args, stdout, stderr) }

func runDemoWorker(args []string, stdout, stderr io.Writer) int {
	return demo.Worker(args, stdout, stderr)
}
