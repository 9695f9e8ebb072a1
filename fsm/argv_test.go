package fsm_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// The seed's copy_argv, like HAProxy's, matched "-sf" loosely and stopped
// at the wrong word. Each case below is one way that went wrong.
func TestReloadArgv(t *testing.T) {
	tests := []struct {
		name string
		argv string
		pids []int
		want string
	}{
		{
			name: "first reload inserts -sf before --",
			argv: "mworker run -n 2 -- server --port 80",
			pids: []int{101, 102},
			want: "mworker run -n 2 -sf 101 102 -- server --port 80",
		},
		{
			name: "without --, every word is mworker's: the list goes at the end",
			argv: "mworker run -n 2",
			pids: []int{101},
			want: "mworker run -n 2 -sf 101",
		},
		{
			name: "earlier -sf list replaced, not extended",
			argv: "mworker run -sf 101 102 -- server",
			pids: []int{201, 202},
			want: "mworker run -sf 201 202 -- server",
		},
		{
			name: "earlier -st list removed too",
			argv: "mworker run -st 7 8 -n 1 -- server",
			pids: []int{201},
			want: "mworker run -n 1 -sf 201 -- server",
		},
		{
			name: "several lists anywhere before --",
			argv: "mworker run -sf 1 -n 2 -st 3 4 --ready notify -sf 5 -- server",
			pids: []int{9},
			want: "mworker run -n 2 --ready notify -sf 9 -- server",
		},
		{
			name: "malformed -sf -1 leaves no stray word",
			argv: "mworker run -sf -1 -n 2 -- server",
			pids: []int{9},
			want: "mworker run -n 2 -sf 9 -- server",
		},
		{
			name: "signed pids are list words",
			argv: "mworker run -sf +3 -4 5 -- server",
			pids: []int{9},
			want: "mworker run -sf 9 -- server",
		},
		{
			name: "empty list removed",
			argv: "mworker run -sf -- server",
			pids: []int{9},
			want: "mworker run -sf 9 -- server",
		},
		{
			name: "list at the very end without --",
			argv: "mworker run -n 2 -sf 1 2",
			pids: []int{9},
			want: "mworker run -n 2 -sf 9",
		},
		{
			name: "no live pids: the old list goes, no -sf is added",
			argv: "mworker run -sf 1 2 -- server",
			pids: nil,
			want: "mworker run -- server",
		},
		{
			name: "options that merely start like a list are kept",
			argv: "mworker run -stop-signal USR1 /sf 3 -sfx 4 -st5 --stop-timeout 5s -- server",
			pids: []int{9},
			want: "mworker run -stop-signal USR1 /sf 3 -sfx 4 -st5 --stop-timeout 5s -sf 9 -- server",
		},
		{
			name: "the option's value is not a pid",
			argv: "mworker run --stop-signal 15 -- server",
			pids: []int{9},
			want: "mworker run --stop-signal 15 -sf 9 -- server",
		},
		{
			name: "the command after -- is untouched, -sf and -- included",
			argv: "mworker run -sf 1 -- haproxy -f cfg -sf 7 8 -st 9 -- x",
			pids: []int{9},
			want: "mworker run -sf 9 -- haproxy -f cfg -sf 7 8 -st 9 -- x",
		},
		{
			name: "argv[0] is never an option",
			argv: "-sf -- server",
			pids: []int{9},
			want: "-sf -sf 9 -- server",
		},
		{
			name: "a list stops at the first non-integer (no --: appended at the end)",
			argv: "mworker run -sf 1 2 server",
			pids: []int{9},
			want: "mworker run server -sf 9",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			argv := strings.Fields(tt.argv)
			orig := slices.Clone(argv)
			got := strings.Join(fsm.ReloadArgv(argv, tt.pids), " ")
			if got != tt.want {
				t.Errorf("ReloadArgv(%q, %v)\n got %q\nwant %q", tt.argv, tt.pids, got, tt.want)
			}
			if !slices.Equal(argv, orig) {
				t.Errorf("ReloadArgv modified its input: %q", argv)
			}
		})
	}
}

// A reload of a reloaded master must give the same argv as a reload of the
// first one: lists do not pile up over many reloads.
func TestReloadArgvIdempotent(t *testing.T) {
	argv := strings.Fields("mworker run -n 2 --stop-signal USR1 -- server -sf 1")
	pids := []int{11, 12}
	once := fsm.ReloadArgv(argv, pids)
	twice := fsm.ReloadArgv(once, pids)
	if !slices.Equal(once, twice) {
		t.Errorf("second reload changed argv:\n once %q\ntwice %q", once, twice)
	}
}
