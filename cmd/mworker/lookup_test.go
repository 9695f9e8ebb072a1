package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestFindCommand(t *testing.T) {
	dir := t.TempDir()
	bin1 := filepath.Join(dir, "bin1")
	bin2 := filepath.Join(dir, "bin2")
	for _, d := range []string{bin1, bin2, filepath.Join(bin1, "isdir")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // umask must not decide
			t.Fatal(err)
		}
	}
	write(filepath.Join(bin1, "tool"), 0o755)
	write(filepath.Join(bin1, "noexec"), 0o644)
	write(filepath.Join(bin1, "shadowed"), 0o644)
	write(filepath.Join(bin2, "shadowed"), 0o755)
	write(filepath.Join(bin2, "isdir"), 0o755)
	write(filepath.Join(bin2, "user-x-only"), 0o100)
	if err := os.Symlink(filepath.Join(bin1, "tool"), filepath.Join(bin2, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(bin1, "gone"), filepath.Join(bin2, "dangling")); err != nil {
		t.Fatal(err)
	}
	path := bin1 + ":" + bin2

	tests := []struct {
		name, path string
		want       string // the resolved path, or "" for an error
		status     int
		msg        string
	}{
		{name: "tool", path: path, want: filepath.Join(bin1, "tool")},
		{name: "shadowed", path: path, want: filepath.Join(bin2, "shadowed")},            // a non-executable match does not stop the search
		{name: "isdir", path: path, want: filepath.Join(bin2, "isdir")},                  // nor does a directory
		{name: "link", path: path, want: filepath.Join(bin2, "link")},                    // a symlink to an executable is fine
		{name: "user-x-only", path: path, want: filepath.Join(bin2, "user-x-only")},      // any execute bit, as execve for root
		{name: filepath.Join(bin1, "tool"), path: "", want: filepath.Join(bin1, "tool")}, // a path is not searched
		{name: "tool", path: ":.:relative:" + bin1, want: filepath.Join(bin1, "tool")},
		{name: "missing", path: path, status: exitNotFound,
			msg: `command "missing" not found in PATH (` + path + `): install it or give its full path`},
		{name: "tool", path: "." + ":" + bin2, status: exitNotFound, // relative entries are never searched
			msg: `command "tool" not found in PATH (.:` + bin2 + `): install it or give its full path`},
		{name: "noexec", path: path, status: exitNotExecutable,
			msg: `command "` + filepath.Join(bin1, "noexec") + `" is not executable: chmod +x it or run it through its interpreter`},
		{name: "dangling", path: path, status: exitNotFound,
			msg: `command "dangling" not found in PATH (` + path + `): install it or give its full path`},
		{name: filepath.Join(bin1, "noexec"), path: path, status: exitNotExecutable,
			msg: `command "` + filepath.Join(bin1, "noexec") + `" is not executable: chmod +x it or run it through its interpreter`},
		{name: bin1, path: path, status: exitNotExecutable,
			msg: `command "` + bin1 + `" is a directory: give the path of an executable file`},
		{name: filepath.Join(dir, "nope"), path: path, status: exitNotFound,
			msg: `command "` + filepath.Join(dir, "nope") + `" not found: check the path`},
		{name: filepath.Join(bin1, "tool", "sub"), path: path, status: exitNotFound,
			msg: `command "` + filepath.Join(bin1, "tool", "sub") + `" not found: check the path`},
	}
	for _, tt := range tests {
		t.Run(tt.name+"@"+tt.path, func(t *testing.T) {
			got, err := findCommand(tt.name, tt.path)
			if tt.want != "" {
				if err != nil || got != tt.want {
					t.Fatalf("findCommand(%q) = %q, %v; want %q", tt.name, got, err, tt.want)
				}
				return
			}
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("findCommand(%q) = %q, %v; want a usage error", tt.name, got, err)
			}
			if ue.status != tt.status || ue.msg != tt.msg {
				t.Errorf("findCommand(%q):\n got %d %s\nwant %d %s", tt.name, ue.status, ue.msg, tt.status, tt.msg)
			}
		})
	}
}

// A relative command with a slash is resolved against the working
// directory, as a shell does.
func TestFindCommandRelative(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "w"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if got, err := findCommand("./w", "/nonexistent"); err != nil || got != "./w" {
		t.Errorf("findCommand(./w) = %q, %v", got, err)
	}
}
