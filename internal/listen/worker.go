package listen

import (
	"strconv"
	"strings"
)

// WorkerEnv gives the variables a worker needs besides LISTEN_PID:
// LISTEN_FDS=n and LISTEN_FDNAMES=a:b:... for the listeners named, in the
// order WorkerFiles maps them. It is empty when there are no listeners (a
// worker that sees LISTEN_FDS expects at least one).
//
// LISTEN_PID must be the worker's own pid, which its parent cannot know
// before the fork: the process started by ForkExec sets it and execs the
// worker's command.
func WorkerEnv(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{
		EnvListenFDs + "=" + strconv.Itoa(len(names)),
		EnvListenFDNames + "=" + strings.Join(names, ":"),
	}
}

// WorkerFiles is the syscall.ProcAttr.Files of a worker: the master's
// stdin, stdout and stderr (fds 0, 1, 2, which the Go runtime keeps open),
// then the listeners as fds 3, 4, ... The child gets them without
// close-on-exec whatever the master's copies have.
func WorkerFiles(ls []Listener) []uintptr {
	files := make([]uintptr, 0, 3+len(ls))
	files = append(files, 0, 1, 2)
	for _, l := range ls {
		files = append(files, l.File.Fd())
	}
	return files
}

// IsActivationVar reports whether an environment entry KEY=VALUE is one
// of the socket-activation variables (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES) or EnvInherited, which must be removed from the
// master's environment before the worker's own are added.
func IsActivationVar(entry string) bool {
	key, _, _ := strings.Cut(entry, "=")
	switch key {
	case EnvListenFDs, EnvListenPID, EnvListenFDNames, EnvInherited:
		return true
	}
	return false
}
