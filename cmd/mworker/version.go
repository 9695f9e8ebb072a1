package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at build time, for a release: go build -ldflags "-X main.version=1.4.0
// -X main.buildTime=2026-05-01T12:00:00Z". Unset, the version comes from
// the module (devel for a source tree) and no build time is printed: the
// Go toolchain records the commit's time, not the build's.
var (
	version   string
	buildTime string
)

// printVersion prints what "mworker version" says: the version, then the
// commit, its time and whether the tree had changes, the build time when
// set, and the Go version and platform.
func printVersion(stdout io.Writer) int {
	info, ok := debug.ReadBuildInfo()
	fmt.Fprint(stdout, versionText(info, ok, version, buildTime, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH))
	return 0
}

func versionText(info *debug.BuildInfo, ok bool, version, buildTime, goVersion, platform string) string {
	if version == "" {
		version = moduleVersion(info, ok)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "mworker %s\n", version)
	settings := map[string]string{}
	if ok {
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if info.GoVersion != "" {
			goVersion = info.GoVersion
		}
	}
	commit := settings["vcs.revision"]
	if commit == "" {
		commit = "unknown (built outside a git checkout, or with -buildvcs=false)"
	} else if settings["vcs.modified"] == "true" {
		commit += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "commit:      %s\n", commit)
	if t := settings["vcs.time"]; t != "" {
		fmt.Fprintf(&b, "commit time: %s\n", t)
	}
	if buildTime != "" {
		fmt.Fprintf(&b, "built:       %s\n", buildTime)
	}
	fmt.Fprintf(&b, "go:          %s %s\n", goVersion, platform)
	return b.String()
}

func moduleVersion(info *debug.BuildInfo, ok bool) string {
	if !ok || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "devel"
	}
	return info.Main.Version
}
