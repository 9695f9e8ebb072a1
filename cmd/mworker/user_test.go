package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/mworker/mworker/osadapter"
)

func TestResolveCredential(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		user, group string
		euid        int
		want        string // an error containing this, or "" for none
		uid, gid    uint32
	}{
		{"", "", 1000, "", 0, 0},
		{"nobody", "", 1000, "--user nobody needs root: the master runs as uid 1000", 0, 0},
		{"", "nogroup", 0, "--group nogroup needs --user", 0, 0},
		{"no-such-user-mw", "", 0, `unknown --user "no-such-user-mw"`, 0, 0},
		{"nobody", "no-such-group-mw", 0, `unknown --group "no-such-group-mw"`, 0, 0},
		{"nobody", "", 0, "", 65534, 65534},
		{"65534", "", 0, "", 65534, 65534},
		{"nobody", "0", 0, "", 65534, 0},
		{"4000000", "", 0, "uid 4000000 has no entry in the user database", 0, 0},
		{"4000000", "4000001", 0, "", 4000000, 4000001},
	} {
		cfg := osadapter.Config{User: tt.user, Group: tt.group}
		err := resolveCredential(&cfg, tt.euid)
		var ue *usageError
		switch {
		case tt.want != "":
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &ue) || ue.status != exitUsage {
				t.Errorf("--user %q --group %q as uid %d: %v, want a usage error with %q", tt.user, tt.group, tt.euid, err, tt.want)
			}
		case err != nil:
			t.Errorf("--user %q --group %q: %v", tt.user, tt.group, err)
		case tt.user == "":
			if cfg.Credential != nil {
				t.Errorf("no --user: credential %+v, want none", cfg.Credential)
			}
		case cfg.Credential == nil:
			t.Errorf("--user %q: no credential", tt.user)
		default:
			c := cfg.Credential
			if c.Uid != tt.uid || c.Gid != tt.gid || c.Groups == nil || len(c.Groups) != 0 || c.NoSetGroups {
				t.Errorf("--user %q --group %q: %+v, want uid %d gid %d and setgroups to none", tt.user, tt.group, c, tt.uid, tt.gid)
			}
		}
	}
}

func TestKubernetesOptions(t *testing.T) {
	t.Parallel()
	cfg, err := parseRunArgs([]string{"--shutdown-delay", "5s", "--success-exit", "143", "--success-exit=0", "--", "srv"})
	if err != nil || cfg.Machine.ShutdownDelay.String() != "5s" || len(cfg.Machine.SuccessExit) != 2 || cfg.Machine.SuccessExit[0] != 143 {
		t.Errorf("parse: %+v %v", cfg, err)
	}
	for _, bad := range [][]string{
		{"--shutdown-delay", "-1s"}, {"--shutdown-delay", "soon"},
		{"--success-exit", "256"}, {"--success-exit", "-1"}, {"--success-exit", "TERM"},
		{"--user", ""}, {"--group", ""},
	} {
		_, err := parseRunArgs(append(bad, "--", "srv"))
		var ue *usageError
		if !errors.As(err, &ue) || ue.status != exitUsage || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%q: %v, want a usage error naming %s", bad, err, bad[0])
		}
	}
}
