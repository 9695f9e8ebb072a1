package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultPath is searched when PATH is unset, as execvp(3) does.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// findCommand resolves the worker's command as a shell would: a name with
// a slash is used as is, any other name is searched in pathList. It
// returns a path the master can execute, or a *usageError with status 127
// (not found) or 126 (found but not executable, or a directory).
//
// It does not use os/exec: the master never imports it (docs/design.md,
// "What a worker sees"). A PATH entry that is relative ("" or ".") is
// skipped, so that a command found there cannot take the place of the one
// meant.
func findCommand(name, pathList string) (string, error) {
	if strings.Contains(name, "/") {
		if err := checkExecutable(name); err != nil {
			return "", err
		}
		return name, nil
	}
	if pathList == "" {
		pathList = defaultPath
	}
	var denied error // the first match that exists but cannot be run
	for _, dir := range filepath.SplitList(pathList) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		err := checkExecutable(p)
		if err == nil {
			return p, nil
		}
		var ue *usageError
		if errors.As(err, &ue) && ue.status == exitNotExecutable && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", denied
	}
	return "", &usageError{status: exitNotFound,
		msg: fmt.Sprintf("command %q not found in PATH (%s): install it or give its full path", name, pathList)}
}

// checkExecutable says whether p names a file the master can execute.
func checkExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR):
		return &usageError{status: exitNotFound,
			msg: fmt.Sprintf("command %q not found: check the path", p)}
	case err != nil:
		return &usageError{status: exitNotExecutable,
			msg: fmt.Sprintf("command %q cannot be run: %s: check the permissions of its directories", p, errText(err))}
	case fi.IsDir():
		return &usageError{status: exitNotExecutable,
			msg: fmt.Sprintf("command %q is a directory: give the path of an executable file", p)}
	}
	// access(2) answers for the real uid; root passes X_OK when any
	// execute bit is set, so the mode bits are checked as well.
	if fi.Mode().Perm()&0o111 == 0 || unix.Access(p, unix.X_OK) != nil {
		return &usageError{status: exitNotExecutable,
			msg: fmt.Sprintf("command %q is not executable: chmod +x it or run it through its interpreter", p)}
	}
	return nil
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
