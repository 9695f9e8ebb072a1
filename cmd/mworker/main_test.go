package main

import (
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

// Bad input through the whole command line: the right status, exactly one
// line on stderr naming the value, nothing on stdout.
func TestRunBadInput(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	tests := []struct {
		args   []string
		status int
		want   string
	}{
		{[]string{}, exitUsage, "Usage:"},
		{[]string{"frobnicate"}, exitUsage, `mworker: unknown command "frobnicate": use run, reload, status, stop, scale, restart, demo, version or help`},
		// The control commands that take an argument check it before they connect.
		{[]string{"scale", "--control", "/nonexistent/c.sock"}, exitUsage, `mworker scale: needs N: mworker scale N --control PATH (N, +K or -K)`},
		{[]string{"scale", "4x", "--control", "/nonexistent/c.sock"}, exitUsage, `mworker scale: bad N "4x"`},
		{[]string{"restart", "--control", "/nonexistent/c.sock"}, exitUsage, `mworker restart: needs SLOT: mworker restart SLOT --control PATH`},
		{[]string{"restart", "--control", "/nonexistent/c.sock", "-1"}, exitUsage, `mworker restart: bad SLOT "-1"`},
		{[]string{"stop", "now", "--control", "/nonexistent/c.sock"}, exitUsage, `mworker stop: unexpected argument "now"`},
		{[]string{"run", "--nope", "--", "sh"}, exitUsage, `mworker: unknown option "--nope"`},
		{[]string{"run", "-n", "0", "--", "sh"}, exitUsage, `mworker: bad --workers "0"`},
		{[]string{"run", "--worker-output", "xml", "--", "sh"}, exitUsage, `mworker: bad --worker-output "xml": use inherit, prefix or json`},
		{[]string{"run", "sh"}, exitUsage, `mworker: unexpected "sh" before "--"`},
		{[]string{"run", "--"}, exitUsage, `mworker: missing command after "--"`},
		{[]string{"run", "-sf", "abc", "--", "sh"}, exitUsage, `mworker: bad -sf pid "abc"`},
		// Options are checked before the command is looked up.
		{[]string{"run", "--restart", "x", "--", "no-such-command"}, exitUsage, `mworker: unknown --restart "x"`},
		{[]string{"run", "--", "no-such-command"}, exitNotFound, `mworker: command "no-such-command" not found in PATH (` + dir + `)`},
		{[]string{"run", "--", filepath.Join(dir, "missing")}, exitNotFound, `mworker: command "` + filepath.Join(dir, "missing") + `" not found`},
		{[]string{"run", "--", "noexec"}, exitNotExecutable, `mworker: command "` + noexec + `" is not executable`},
		{[]string{"run", "--", dir}, exitNotExecutable, `mworker: command "` + dir + `" is a directory`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			got := run(tt.args, &stdout, &stderr)
			if got != tt.status {
				t.Errorf("status %d, want %d", got, tt.status)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: %q", stdout.String())
			}
			if !strings.HasPrefix(stderr.String(), tt.want) {
				t.Errorf("stderr %q, want it to start with %q", stderr.String(), tt.want)
			}
			if len(tt.args) > 0 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr.String())
			}
		})
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--help"}, "Usage: mworker run [options] -- COMMAND [ARG...]"},
		{[]string{"run", "-h"}, "Usage: mworker run [options] -- COMMAND [ARG...]"},
		{[]string{"help", "run"}, "Usage: mworker run [options] -- COMMAND [ARG...]"},
		{[]string{"help"}, "Usage:\n  mworker run"},
		{[]string{"--help"}, "Usage:\n  mworker run"},
		{[]string{"version"}, "mworker "},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if got := run(tt.args, &stdout, &stderr); got != 0 {
			t.Errorf("run(%q) = %d, want 0; stderr %q", tt.args, got, stderr.String())
		}
		if !strings.HasPrefix(stdout.String(), tt.want) {
			t.Errorf("run(%q) printed %q, want it to start with %q", tt.args, stdout.String(), tt.want)
		}
		if stderr.Len() != 0 {
			t.Errorf("run(%q) wrote to stderr: %q", tt.args, stderr.String())
		}
	}
}

// The --help manual and the package documentation both describe every
// option the parser accepts, every signal route and every exit status.
func TestManualsComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	help := runManual()
	var words []string
	for _, o := range runOptions {
		words = append(words, o.long+" "+o.arg)
		if o.short != "" {
			words = append(words, o.short+", "+o.long)
		}
		if o.def != "" {
			words = append(words, "default "+o.def)
		}
	}
	words = append(words, "-sf PID...", "-st PID...", "SIGUSR2, SIGHUP", "SIGUSR1", "SIGTERM, SIGINT",
		"128+", "126", "127")
	for _, w := range words {
		if !strings.Contains(doc, w) {
			t.Errorf("package documentation does not mention %q", w)
		}
		if !strings.Contains(help, w) {
			t.Errorf("mworker run --help does not mention %q", w)
		}
	}
	for i, line := range strings.Split(help, "\n") {
		if len(line) > 90 {
			t.Errorf("--help line %d is %d columns wide: %q", i+1, len(line), line)
		}
	}
}

func TestModuleVersion(t *testing.T) {
	tests := []struct {
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{nil, false, "devel"},
		{&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, true, "devel"},
		{&debug.BuildInfo{Main: debug.Module{Version: ""}}, true, "devel"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, true, "v1.2.3"},
	}
	for _, tt := range tests {
		if got := moduleVersion(tt.info, tt.ok); got != tt.want {
			t.Errorf("moduleVersion(%+v) = %q, want %q", tt.info, got, tt.want)
		}
	}
}

// mworker version: the version (a -ldflags one first), the commit and
// whether the tree was modified, the commit's time, a build time when the
// build set one, and Go's version.
func TestVersionText(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123abcd"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		info           *debug.BuildInfo
		ok             bool
		version, built string
		want           string
	}{
		{info, true, "", "", "mworker devel\ncommit:      0123abcd (with uncommitted changes)\ncommit time: 2026-01-02T03:04:05Z\ngo:          go1.26.0 linux/amd64\n"},
		{info, true, "1.4.0", "2026-02-03T00:00:00Z", "mworker 1.4.0\ncommit:      0123abcd (with uncommitted changes)\ncommit time: 2026-01-02T03:04:05Z\nbuilt:       2026-02-03T00:00:00Z\ngo:          go1.26.0 linux/amd64\n"},
		{&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "ff"}, {Key: "vcs.modified", Value: "false"}}}, true, "", "",
			"mworker v1.2.3\ncommit:      ff\ngo:          go1.0 linux/amd64\n"},
		{nil, false, "", "", "mworker devel\ncommit:      unknown (built outside a git checkout, or with -buildvcs=false)\ngo:          go1.0 linux/amd64\n"},
	} {
		if got := versionText(tc.info, tc.ok, tc.version, tc.built, "go1.0", "linux/amd64"); got != tc.want {
			t.Errorf("versionText(%+v, %q, %q) =\n%s\nwant\n%s", tc.info, tc.version, tc.built, got, tc.want)
		}
	}
}
