package main

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
	"github.com/mworker/mworker/osadapter"
)

func TestParseRunArgsDefaults(t *testing.T) {
	cfg, err := parseRunArgs([]string{"--", "server", "-x"})
	if err != nil {
		t.Fatal(err)
	}
	want := osadapter.Config{
		Machine: fsm.Config{
			Workers:      1,
			Ready:        fsm.ReadyMode{Kind: fsm.ReadyAfter, After: time.Second},
			ReadyTimeout: 30 * time.Second,
			StopSignal:   fsm.SIGTERM,
			StopTimeout:  10 * time.Second,
			Restart:      fsm.RestartAlways,
			Backoff:      fsm.Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Reset: time.Minute},
			Reexec:       fsm.ReexecOnUpgrade,

			MaxOldGenerations: fsm.DefaultMaxOldGenerations,
		},
		Command:   []string{"server", "-x"},
		LogFormat: "text",
		Terminal:  osadapter.TerminalAuto,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", cfg, want)
	}
}

func TestParseRunArgs(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		check func(c osadapter.Config) bool
	}{
		{"workers short", []string{"-n", "4", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Workers == 4 }},
		{"workers short equals", []string{"-n=5", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Workers == 5 }},
		{"workers long", []string{"--workers", "1024", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Workers == 1024 }},
		{"workers long equals", []string{"--workers=7", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Workers == 7 }},
		{"last value wins", []string{"-n", "2", "--workers=3", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Workers == 3 }},
		{"listen repeatable", []string{"--listen", ":8080", "--listen=admin=unix:///tmp/a.sock", "--", "x"}, func(c osadapter.Config) bool {
			return reflect.DeepEqual(c.Listen, []string{":8080", "admin=unix:///tmp/a.sock"})
		}},
		{"listen nonblocking", []string{"--listen", ":8080", "--listen-nonblocking", "yes", "--", "x"}, func(c osadapter.Config) bool { return c.ListenNonblocking }},
		{"listen nonblocking no", []string{"--listen", ":8080", "--listen-nonblocking=yes", "--listen-nonblocking=no", "--", "x"}, func(c osadapter.Config) bool { return !c.ListenNonblocking }},
		{"fd-env repeatable", []string{"--fd-env", "NGINX={fds:;};", "--fd-env=FDS={fds}", "--", "x"}, func(c osadapter.Config) bool {
			return len(c.FdEnv) == 2 && c.FdEnv[0].String() == "NGINX={fds:;};" && c.FdEnv[1].Name == "FDS"
		}},
		{"ready notify", []string{"--ready", "notify", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Ready.Kind == fsm.ReadyNotify }},
		{"ready duration", []string{"--ready=1500ms", "--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.Ready == fsm.ReadyMode{Kind: fsm.ReadyAfter, After: 1500 * time.Millisecond}
		}},
		{"ready timeout", []string{"--ready-timeout", "2s", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.ReadyTimeout == 2*time.Second }},
		{"stop signal name", []string{"--stop-signal", "QUIT", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.StopSignal == fsm.SIGQUIT }},
		{"stop signal SIG prefix", []string{"--stop-signal=SIGUSR1", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.StopSignal == fsm.SIGUSR1 }},
		{"stop signal number", []string{"--stop-signal", "2", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.StopSignal == fsm.SIGINT }},
		{"stop timeout", []string{"--stop-timeout=250ms", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.StopTimeout == 250*time.Millisecond }},
		{"max old generations default", []string{"--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.MaxOldGenerations == fsm.DefaultMaxOldGenerations
		}},
		{"max old generations", []string{"--max-old-generations", "1", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.MaxOldGenerations == 1 }},
		{"max old generations 0", []string{"--max-old-generations=0", "--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.MaxOldGenerations == fsm.NoOldGenerations
		}},
		{"restart no", []string{"--restart", "no", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Restart == fsm.RestartNo }},
		{"restart on-failure", []string{"--restart=on-failure", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Restart == fsm.RestartOnFailure }},
		{"backoff default", []string{"--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.Backoff == fsm.DefaultBackoff && c.Machine.RestartLimit == fsm.RestartLimit{}
		}},
		{"backoff", []string{"--backoff", "10ms..50ms", "--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.Backoff == fsm.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, Reset: fsm.DefaultBackoff.Reset}
		}},
		{"backoff equal", []string{"--backoff=1s..1s", "--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.Backoff.Min == time.Second && c.Machine.Backoff.Max == time.Second
		}},
		{"restart limit", []string{"--restart-limit", "5/60s", "--", "x"}, func(c osadapter.Config) bool {
			return c.Machine.RestartLimit == fsm.RestartLimit{Count: 5, Window: time.Minute}
		}},
		{"restart limit off", []string{"--restart-limit=off", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.RestartLimit.Count == 0 }},
		{"watchdog default", []string{"--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == 0 }},
		{"watchdog", []string{"--watchdog", "30s", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == 30*time.Second }},
		{"watchdog least", []string{"--watchdog=1ms", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == time.Millisecond }},
		{"watchdog 0", []string{"--watchdog", "5s", "--watchdog", "0", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == 0 }},
		{"watchdog off", []string{"--watchdog", "5s", "--watchdog=off", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == 0 }},
		{"watchdog 0s", []string{"--watchdog", "5s", "--watchdog=0s", "--", "x"}, func(c osadapter.Config) bool { return c.Machine.Watchdog == 0 }},
		{"control", []string{"--control", "/run/a.sock", "--", "x"}, func(c osadapter.Config) bool { return c.Control == "/run/a.sock" }},
		{"pidfile", []string{"--pidfile=/run/a.pid", "--", "x"}, func(c osadapter.Config) bool { return c.PidFile == "/run/a.pid" }},
		{"log format json", []string{"--log-format", "json", "--", "x"}, func(c osadapter.Config) bool { return c.LogFormat == "json" }},
		{"log level debug", []string{"--log-level", "debug", "--", "x"}, func(c osadapter.Config) bool { return c.LogLevel == slog.LevelDebug }},
		{"tty off", []string{"--tty", "off", "--", "x"}, func(c osadapter.Config) bool { return c.Terminal == osadapter.TerminalOff }},
		{"restart given", []string{"--restart", "always", "--", "x"}, func(c osadapter.Config) bool { return c.RestartGiven }},
		{"log level default", []string{"--", "x"}, func(c osadapter.Config) bool { return c.LogLevel == slog.LevelInfo }},
		{"sf list", []string{"-sf", "10", "11", "12", "--", "x"}, func(c osadapter.Config) bool {
			return reflect.DeepEqual(c.Machine.StopPids, []int{10, 11, 12}) && c.Machine.TermPids == nil
		}},
		{"st list then option", []string{"-st", "10", "11", "-n", "2", "--", "x"}, func(c osadapter.Config) bool {
			return reflect.DeepEqual(c.Machine.TermPids, []int{10, 11}) && c.Machine.Workers == 2
		}},
		{"sf lists accumulate", []string{"-sf", "1", "-n", "2", "-sf", "3", "--", "x"}, func(c osadapter.Config) bool {
			return reflect.DeepEqual(c.Machine.StopPids, []int{1, 3})
		}},
		{"empty sf list", []string{"-sf", "--", "x"}, func(c osadapter.Config) bool { return len(c.Machine.StopPids) == 0 }},
		{"command keeps its options", []string{"--", "srv", "--workers", "0", "-sf", "x", "--"}, func(c osadapter.Config) bool {
			return reflect.DeepEqual(c.Command, []string{"srv", "--workers", "0", "-sf", "x", "--"}) && c.Machine.Workers == 1
		}},
		{"value that looks like an option", []string{"--control", "--odd", "--", "x"}, func(c osadapter.Config) bool { return c.Control == "--odd" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseRunArgs(tt.args)
			if err != nil {
				t.Fatalf("parseRunArgs(%q): %v", tt.args, err)
			}
			if !tt.check(cfg) {
				t.Errorf("parseRunArgs(%q) = %+v", tt.args, cfg)
			}
		})
	}
}

// Every bad command line is refused with one line that names the bad
// value and says how to fix it. A want ending in "..." is a prefix: the
// rest of those lines is worded by internal/listen.
func TestParseRunArgsErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus", "--", "x"}, `unknown option "--bogus": see mworker run --help for the options`},
		{[]string{"--bogus=1", "--", "x"}, `unknown option "--bogus": see mworker run --help for the options`},
		{[]string{"-x", "--", "x"}, `unknown option "-x": see mworker run --help for the options`},
		{[]string{"-workers", "2", "--", "x"}, `unknown option "-workers": did you mean --workers? (see mworker run --help)`},
		{[]string{"-n", "0", "--", "x"}, `bad --workers "0": use a number from 1 to 1024`},
		{[]string{"--workers=1025", "--", "x"}, `bad --workers "1025": use a number from 1 to 1024`},
		{[]string{"-n", "-3", "--", "x"}, `bad --workers "-3": use a number from 1 to 1024`},
		{[]string{"-n", "two", "--", "x"}, `bad --workers "two": use a number from 1 to 1024`},
		{[]string{"-n"}, `-n needs a value: write -n N`},
		{[]string{"--workers", "--", "x"}, `--workers needs a value: write --workers N`},
		{[]string{"--listen=", "--", "x"}, `"": bad --listen value: ...`},
		{[]string{"--listen", "http://x:80", "--", "x"}, `"http://x:80": bad --listen value: ...`},
		{[]string{"--listen", "unix://run/a.sock", "--", "x"}, `"unix://run/a.sock": bad --listen value: ...`},
		{[]string{"--listen", ":8080", "--listen=tcp://:8080", "--", "x"}, `"tcp://:8080": bad --listen value: ...`},
		{[]string{"--listen", ":8080", "--listen-nonblocking", "true", "--", "x"}, `bad --listen-nonblocking "true": use yes or no`},
		{[]string{"--listen-nonblocking", "yes", "--", "x"}, `--listen-nonblocking yes without --listen: it applies to the sockets --listen binds (systemd's keep the mode of their NonBlocking=); add --listen or drop it`},
		{[]string{"--fd-env", "NGINX=3;", "--", "x"}, `bad --fd-env NGINX format "3;": it names no fd; put {fds} or {fds:SEP} where the fd numbers go, such as 'NGINX={fds:;};'`},
		{[]string{"--fd-env", "NGINX", "--", "x"}, `bad --fd-env "NGINX": write NAME=FORMAT, such as 'NGINX={fds:;};'`},
		{[]string{"--fd-env", "NGINX={fd};", "--", "x"}, `bad --fd-env NGINX placeholder {fd}: use {fds} (fds joined by commas) or {fds:SEP} with a separator SEP, such as {fds:;}`},
		{[]string{"--fd-env", "LISTEN_FDS={fds}", "--", "x"}, `bad --fd-env name "LISTEN_FDS": mworker sets it itself; choose the variable your server reads`},
		{[]string{"--fd-env", "A={fds}", "--fd-env=A={fds:;}", "--", "x"}, `--fd-env A given twice (A={fds} and A={fds:;}): keep one`},
		{[]string{"--ready", "soon", "--", "x"}, `bad --ready "soon": use immediate, notify or a positive duration such as 2s`},
		{[]string{"--ready", "-1s", "--", "x"}, `bad --ready "-1s": use immediate, notify or a positive duration such as 2s`},
		{[]string{"--ready-timeout", "10", "--", "x"}, `bad --ready-timeout "10": use a positive duration such as 500ms, 10s or 1m`},
		{[]string{"--ready-timeout=0s", "--", "x"}, `bad --ready-timeout "0s": use a positive duration such as 500ms, 10s or 1m`},
		{[]string{"--ready-timeout", "500ms", "--", "x"}, `--ready-timeout 500ms is not longer than --ready 1s (the default): every reload would be rolled back; use a longer --ready-timeout, a shorter --ready, or --ready notify`},
		{[]string{"--ready", "1s", "--ready-timeout", "1s", "--", "x"}, `--ready-timeout 1s is not longer than --ready 1s: every reload would be rolled back; ...`},
		{[]string{"--ready-timeout", "5s", "--ready=10s", "--", "x"}, `--ready-timeout 5s is not longer than --ready 10s: every reload ...`},
		{[]string{"--stop-timeout", "forever", "--", "x"}, `bad --stop-timeout "forever": use a positive duration such as 500ms, 10s or 1m`},
		{[]string{"--stop-timeout", "-2s", "--", "x"}, `bad --stop-timeout "-2s": use a positive duration such as 500ms, 10s or 1m`},
		{[]string{"--stop-signal", "FOO", "--", "x"}, `bad --stop-signal: unknown signal "FOO": use a name such as TERM, SIGUSR1 or a number 1..64`},
		{[]string{"--stop-signal", "65", "--", "x"}, `bad --stop-signal: unknown signal "65": use a name such as TERM, SIGUSR1 or a number 1..64`},
		{[]string{"--stop-signal", "STOP", "--", "x"}, `bad --stop-signal "STOP": a worker cannot stop on STOP; use TERM, QUIT, INT or USR1`},
		{[]string{"--restart", "sometimes", "--", "x"}, `unknown --restart "sometimes": use always, on-failure or no`},
		{[]string{"--backoff", "0..1s", "--", "x"}, `bad --backoff "0..1s": MIN must be positive; use e.g. 100ms..1s`},
		{[]string{"--backoff", "5s..1s", "--", "x"}, `bad --backoff "5s..1s": MIN 5s is longer than MAX 1s; write the shorter first, e.g. 1s..5s`},
		{[]string{"--backoff", "abc", "--", "x"}, `bad --backoff "abc": use MIN..MAX, two durations such as 100ms..30s`},
		{[]string{"--backoff", "1s-5s", "--", "x"}, `bad --backoff "1s-5s": use MIN..MAX, two durations such as 100ms..30s`},
		{[]string{"--restart-limit", "5", "--", "x"}, `bad --restart-limit "5": use N/WINDOW, a count of 1 or more and a positive duration, such as 5/60s, or off`},
		{[]string{"--restart-limit", "0/60s", "--", "x"}, `bad --restart-limit "0/60s": use N/WINDOW, ...`},
		{[]string{"--restart-limit", "3/0s", "--", "x"}, `bad --restart-limit "3/0s": use N/WINDOW, ...`},
		{[]string{"--watchdog", "soon", "--", "x"}, `bad --watchdog "soon": use a duration of 1ms or more such as 30s, or 0 (off)`},
		{[]string{"--watchdog", "-5s", "--", "x"}, `bad --watchdog "-5s": use a duration of 1ms or more such as 30s, or 0 (off)`},
		{[]string{"--watchdog=500us", "--", "x"}, `bad --watchdog "500us": use a duration of 1ms or more such as 30s, or 0 (off)`},
		{[]string{"--metrics", "9100", "--", "x"}, `bad --metrics "9100": use HOST:PORT (such as 127.0.0.1:9100 or :9100), tcp://HOST:PORT or unix:///PATH`},
		{[]string{"--metrics=", "--", "x"}, `bad --metrics "": use HOST:PORT ...`},
		{[]string{"--metrics", "http://:9100", "--", "x"}, `bad --metrics "http://:9100": use HOST:PORT ...`},
		{[]string{"--metrics", "m=:9100", "--", "x"}, `bad --metrics "m=:9100": use HOST:PORT ...`},
		{[]string{"--metrics", "unix://rel/m.sock", "--", "x"}, `bad --metrics "unix://rel/m.sock": use HOST:PORT ...`},
		{[]string{"--watchdog", "--", "x"}, `--watchdog needs a value: write --watchdog D`},
		{[]string{"--control", "", "--", "x"}, `empty --control: use the path of a socket to create, such as /run/app.sock`},
		{[]string{"--pidfile=", "--", "x"}, `empty --pidfile: use a file path such as /run/app.pid`},
		{[]string{"--log-format", "xml", "--", "x"}, `bad --log-format "xml": use text or json`},
		{[]string{"--log-level", "verbose", "--", "x"}, `bad --log-level "verbose": use debug, info, warn or error`},
		{[]string{"--tty", "yes", "--", "x"}, `bad --tty "yes": use auto, on or off`},
		{[]string{"--max-old-generations", "-1", "--", "x"}, `bad --max-old-generations "-1": use a number of generations from 0 (none drains) to 10000`},
		{[]string{"--max-old-generations=four", "--", "x"}, `bad --max-old-generations "four": use a number of generations from 0 (none drains) to 10000`},
		{[]string{"--max-old-generations", "10001", "--", "x"}, `bad --max-old-generations "10001": use a number of generations from 0 (none drains) to 10000`},
		{[]string{"-sf", "-1", "--", "x"}, `bad -sf pid "-1": use process ids from 1 to 4194304, e.g. -sf 1234 1235`},
		{[]string{"-sf", "0", "--", "x"}, `bad -sf pid "0": use process ids from 1 to 4194304, e.g. -sf 1234 1235`},
		{[]string{"-sf", "12", "abc", "--", "x"}, `bad -sf pid "abc": use process ids from 1 to 4194304, e.g. -sf 1234 1235`},
		{[]string{"-st", "99999999999", "--", "x"}, `bad -st pid "99999999999": use process ids from 1 to 4194304, e.g. -st 1234 1235`},
		{[]string{"-st", "1.5", "--", "x"}, `bad -st pid "1.5": use process ids from 1 to 4194304, e.g. -st 1234 1235`},
		{[]string{"-sf=12", "--", "x"}, `-sf takes pids as separate words: write -sf 1234 1235`},
		{[]string{"server"}, `unexpected "server" before "--": write mworker run [options] -- server`},
		{[]string{"-n", "2", "server", "arg"}, `unexpected "server" before "--": write mworker run [options] -- server`},
		{[]string{}, `missing "--" and command: write mworker run [options] -- COMMAND [ARG...]`},
		{[]string{"-n", "2"}, `missing "--" and command: write mworker run [options] -- COMMAND [ARG...]`},
		{[]string{"--"}, `missing command after "--": write mworker run [options] -- COMMAND [ARG...]`},
		{[]string{"--", ""}, `missing command after "--": write mworker run [options] -- COMMAND [ARG...]`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseRunArgs(tt.args)
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("parseRunArgs(%q) = %v, want a usage error", tt.args, err)
			}
			if ue.status != exitUsage {
				t.Errorf("status %d, want %d", ue.status, exitUsage)
			}
			want, isPrefix := strings.CutSuffix(tt.want, "...")
			if ue.msg != tt.want && !(isPrefix && strings.HasPrefix(ue.msg, want)) {
				t.Errorf("parseRunArgs(%q):\n got %s\nwant %s", tt.args, ue.msg, tt.want)
			}
			if strings.Contains(ue.msg, "\n") {
				t.Errorf("message is more than one line: %q", ue.msg)
			}
		})
	}
}

func TestParseRunArgsHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"-n", "2", "--help", "--", "x"}} {
		if _, err := parseRunArgs(args); !errors.Is(err, errHelp) {
			t.Errorf("parseRunArgs(%q) = %v, want errHelp", args, err)
		}
	}
	// After "--", --help belongs to the command.
	cfg, err := parseRunArgs([]string{"--", "x", "--help"})
	if err != nil || !reflect.DeepEqual(cfg.Command, []string{"x", "--help"}) {
		t.Errorf("parseRunArgs(-- x --help) = %v, %v", cfg.Command, err)
	}
}

// The argv a re-exec builds (fsm.ReloadArgv) must parse back to the same
// configuration with the live pids as the -sf list.
func TestReloadArgvParses(t *testing.T) {
	argv := []string{"mworker", "run", "-n", "3", "-sf", "5", "-st", "6", "7", "--stop-signal=QUIT", "--", "srv", "-sf", "8"}
	next := fsm.ReloadArgv(argv, []int{100, 101, 102})
	cfg, err := parseRunArgs(next[2:])
	if err != nil {
		t.Fatalf("parseRunArgs(%q): %v", next, err)
	}
	if !reflect.DeepEqual(cfg.Machine.StopPids, []int{100, 101, 102}) || cfg.Machine.TermPids != nil {
		t.Errorf("pids after reload: sf=%v st=%v", cfg.Machine.StopPids, cfg.Machine.TermPids)
	}
	if cfg.Machine.Workers != 3 || cfg.Machine.StopSignal != fsm.SIGQUIT || !reflect.DeepEqual(cfg.Command, []string{"srv", "-sf", "8"}) {
		t.Errorf("reload changed the configuration: %+v", cfg)
	}
}
