package e2etest

import (
	"os"
	"strconv"
	"strings"
)

// Proc is what tests read of a process in /proc/PID/stat.
type Proc struct {
	Pid, Ppid, Pgrp, Session int
	// Tpgid is the foreground process group of the process's controlling
	// terminal, -1 when it has none.
	Tpgid int
	State byte   // R, S, D, T, Z...
	Comm  string // the command name, as the kernel keeps it
}

// ReadProc reads pid's /proc/PID/stat; false once pid is gone (reaped).
func ReadProc(pid int) (Proc, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Proc{}, false
	}
	// pid (comm) state ppid pgrp session tty_nr tpgid ...: comm may hold
	// spaces and parentheses, so the fields start after the last ')'.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return Proc{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 6 || f[0] == "" {
		return Proc{}, false
	}
	p := Proc{Pid: pid, State: f[0][0], Comm: s[open+1 : end]}
	p.Ppid, _ = strconv.Atoi(f[1])
	p.Pgrp, _ = strconv.Atoi(f[2])
	p.Session, _ = strconv.Atoi(f[3])
	p.Tpgid, _ = strconv.Atoi(f[5])
	return p, true
}

// Procs are the processes for which keep is true (every process with a
// nil keep).
func Procs(keep func(Proc) bool) []Proc {
	ents, _ := os.ReadDir("/proc")
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := ReadProc(pid); ok && (keep == nil || keep(p)) {
			out = append(out, p)
		}
	}
	return out
}

// State is pid's state letter, or 0 once it is gone.
func State(pid int) byte {
	p, _ := ReadProc(pid)
	return p.State
}

// Wchan names the kernel function pid sleeps in (/proc/PID/wchan:
// "inet_csk_accept" for a blocking accept, "do_epoll_wait"), "0" when it
// runs, "" once it is gone.
func Wchan(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/wchan")
	return string(b)
}

// Children are the processes whose parent is pid.
func Children(pid int) []Proc {
	return Procs(func(p Proc) bool { return p.Ppid == pid })
}
