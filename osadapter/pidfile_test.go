package osadapter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A --pidfile that cannot be written is one line that names the path and
// the fix, without the package's prefix or the temporary file's name, and
// leaves no temporary file behind.
func TestPidFileErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{dir, "--pidfile " + dir + " is a directory: give a file path in it, such as " + filepath.Join(dir, "mworker.pid")},
		{dir + "/", "--pidfile " + dir + "/ is a directory: give a file path in it, such as " + filepath.Join(dir, "mworker.pid")},
		{filepath.Join(dir, "missing", "m.pid"), "cannot write --pidfile " + filepath.Join(dir, "missing", "m.pid") + ": the directory " + filepath.Join(dir, "missing") + " does not exist: create it or choose another path"},
		{filepath.Join(file, "m.pid"), "cannot write --pidfile " + filepath.Join(file, "m.pid") + ": " + file + " is not a directory: choose another path"},
	} {
		err := writePidFile(tc.path, 42)
		if err == nil || err.Error() != tc.want {
			t.Errorf("writePidFile(%q) = %v, want %q", tc.path, err, tc.want)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
