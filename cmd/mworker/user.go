package main

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/mworker/mworker/osadapter"
)

// geteuid is the master's effective uid; a variable for the tests.
var geteuid = os.Geteuid

// resolveCredential turns --user and --group into the workers'
// credential: the user's uid, the group's gid (--group, else the user's
// primary group), and no supplementary groups (setgroups to none), as
// HAProxy's uid/gid do: a worker that needs another group gets it with
// --group. Only root can give its workers another uid: anyone else gets
// one line and status 2, as does a name the user database does not know.
func resolveCredential(cfg *osadapter.Config, euid int) error {
	if cfg.User == "" {
		if cfg.Group != "" {
			return usagef("--group %s needs --user: give the workers' user too, such as --user www-data --group %s", cfg.Group, cfg.Group)
		}
		return nil
	}
	if euid != 0 {
		return usagef("--user %s needs root: the master runs as uid %d; start it as root (it keeps the listeners and the control socket, the workers run as %s) or drop --user", cfg.User, euid, cfg.User)
	}
	uid, gid, err := lookupUser(cfg.User)
	if err != nil {
		return err
	}
	if cfg.Group != "" {
		if gid, err = lookupGroup(cfg.Group); err != nil {
			return err
		}
	} else if gid < 0 {
		return usagef("--user %s: uid %d has no entry in the user database, so no primary group: give one with --group", cfg.User, uid)
	}
	cfg.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return nil
}

// lookupUser returns the uid of a name or number, and its primary gid
// (-1 for a number the user database does not know).
func lookupUser(v string) (uid, gid int, err error) {
	if n, ok := idNumber(v); ok {
		u, err := user.LookupId(v)
		if err != nil {
			return n, -1, nil
		}
		g, _ := strconv.Atoi(u.Gid)
		return n, g, nil
	}
	u, err := user.Lookup(v)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		return 0, 0, usagef("unknown --user %q: no such user in the user database; create it (useradd --system %s) or give a numeric uid", v, v)
	}
	if err != nil {
		return 0, 0, usagef("--user %q: %v", v, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil {
		return 0, 0, usagef("--user %q: the user database gives uid %q gid %q, not numbers", v, u.Uid, u.Gid)
	}
	return uid, gid, nil
}

func lookupGroup(v string) (int, error) {
	if n, ok := idNumber(v); ok {
		return n, nil
	}
	g, err := user.LookupGroup(v)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		return 0, usagef("unknown --group %q: no such group in the group database; create it (groupadd --system %s) or give a numeric gid", v, v)
	}
	if err != nil {
		return 0, usagef("--group %q: %v", v, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, usagef("--group %q: the group database gives gid %q, not a number", v, g.Gid)
	}
	return gid, nil
}

// idNumber reads a numeric uid or gid: 0..2^32-2 (2^32-1 is the kernel's
// "no id").
func idNumber(v string) (int, bool) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 1<<32-1 {
		return 0, false
	}
	return int(n), true
}
