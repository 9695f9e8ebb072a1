package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/mworker/mworker/osadapter"
)

// runMaster is "mworker run": it checks the whole command line, resolves
// the command, and hands over to the adapter, whose status it returns.
func runMaster(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == osadapter.CheckFlag {
		return checkHandover(args[1:], stderr)
	}
	cfg, err := parseRunArgs(args)
	if errors.Is(err, errHelp) {
		fmt.Fprint(stdout, runManual())
		return 0
	}
	if err != nil {
		return report(stderr, err)
	}
	// After a reload's re-exec a vanished command is no reason to exit:
	// that would stop the serving workers. The new generation fails to
	// start instead, and the reload is rolled back.
	path, err := findCommand(cfg.Command[0], os.Getenv("PATH"))
	switch {
	case err == nil:
		cfg.Command[0] = path
	case !osadapter.Resumed():
		return report(stderr, err)
	}
	cfg.Stderr = stderr
	cfg.CheckTakeover = true
	cfg.Version = moduleVersion(debug.ReadBuildInfo()) // status reports the image running
	return osadapter.Run(cfg)
}

// report writes err as the one line bad input gets and returns its status.
func report(stderr io.Writer, err error) int {
	fmt.Fprintf(stderr, "mworker: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return ue.status
	}
	return 1
}

// checkHandover is "mworker run --check-handover ...", which a master runs
// on the binary at its start path before a reload's execve: exit 0 when
// this binary accepts the command line and the handover in the
// environment, else one line and a non-zero status (osadapter.CheckFlag).
func checkHandover(args []string, stderr io.Writer) int {
	cfg, err := parseRunArgs(args)
	if err == nil {
		err = osadapter.CheckHandover(cfg)
	}
	if errors.Is(err, errHelp) {
		err = usagef("%s takes no --help", osadapter.CheckFlag)
	}
	if err != nil {
		return report(stderr, err)
	}
	return 0
}
