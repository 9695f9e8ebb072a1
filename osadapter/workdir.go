package osadapter

import (
	"log/slog"
	"path/filepath"
)

// The master does not keep the directory it was started in as its working
// directory, which would stop the filesystem it is on from being
// unmounted: once started, it moves to "/". Workers still start in that
// directory (ProcAttr.Dir: the child changes to it between fork and
// execve), and a relative path in the master's own options (--control,
// --pidfile) is made absolute first. A reload's re-exec goes back to it
// for the takeover check and the execve, so that the next image reads its
// command line (relative paths, the command) as the first did, and leaves
// again once started: the directory is the master's only for those moments.
//
// The directory is recorded once, at the first start, and handed to every
// next image (execState.Dir). If it is removed, workers cannot start (the
// spawn fails as a command that cannot be executed does), and the next
// image reads relative paths from "/".
//
// With --user the master keeps its directory and workers inherit it as
// before: the child changes to ProcAttr.Dir after it changed its uid, and
// a directory the worker's user may not enter, which it could inherit,
// would then stop every worker from starting.

// useDir records the directory the workers start in and makes the paths
// absolute. resumed is the previous image's state, nil at the first start.
func (l *loop) useDir(resumed *execState, paths ...*string) {
	if l.sys.Getwd == nil || l.sys.Chdir == nil || l.cred != nil {
		return
	}
	if resumed != nil && resumed.Dir != "" {
		l.dir = resumed.Dir
	} else {
		dir, err := l.sys.Getwd()
		if err != nil {
			// The directory is already gone: nothing to release, and
			// nothing for the workers to start in but what is left.
			l.logf(slog.LevelWarn, "cannot tell the working directory: the master keeps it and workers start in it", "err", err.Error())
			return
		}
		l.dir = dir
	}
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(l.dir, *p)
		}
	}
}

// leaveDir moves the master to "/".
func (l *loop) leaveDir() {
	if l.dir == "" || l.dir == "/" {
		return
	}
	if err := l.sys.Chdir("/"); err != nil {
		l.logf(slog.LevelWarn, "cannot leave the working directory for /: the master keeps it", "dir", l.dir, "err", err.Error())
	}
}

// enterDir moves the master back to the directory it was started in, for
// a re-exec.
func (l *loop) enterDir() {
	if l.dir == "" || l.dir == "/" {
		return
	}
	if err := l.sys.Chdir(l.dir); err != nil {
		l.logf(slog.LevelWarn, "cannot go back to the directory mworker was started in for the re-exec: the next image reads relative paths in its command line from /", "dir", l.dir, "err", err.Error())
	}
}
