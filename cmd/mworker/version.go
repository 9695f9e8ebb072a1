package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

// printVersion prints the module version mworker was built from, or
// "devel" for a build from a source tree.
func printVersion(stdout io.Writer) int {
	fmt.Fprintln(stdout, "mworker", moduleVersion(debug.ReadBuildInfo()))
	return 0
}

func moduleVersion(info *debug.BuildInfo, ok bool) string {
	if !ok || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "devel"
	}
	return info.Main.Version
}
