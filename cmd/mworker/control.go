package main

import (
	"io"

	"github.com/mworker/mworker/internal/control"
)

// runControlClient is "mworker reload|status|stop": a client of a running
// master's --control socket.
func runControlClient(cmd string, args []string, stdout, stderr io.Writer) int {
	return control.RunClient(cmd, args, stdout, stderr)
}
