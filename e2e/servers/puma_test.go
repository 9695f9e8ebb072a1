package servers

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestPuma runs the puma recipe of docs/servers.md: puma takes the
// listener from LISTEN_FDS (systemd socket activation,
// --bind-to-activated-sockets only), says READY=1 through the sd_notify
// gem (--ready notify), and drains on TERM, then re-raises it: the master
// reports the worker killed by TERM, 143.
func TestPuma(t *testing.T) {
	t.Parallel()
	puma := need(t, "puma", "puma")
	if exec.Command("ruby", "-e", "require 'sd_notify'").Run() != nil {
		t.Skip("the sd_notify gem is missing: install the Debian package ruby-sd-notify (sh scripts/test-deps.sh does)")
	}
	dir := t.TempDir()
	app := filepath.Join(dir, "config.ru")
	writeFile(t, app, `run ->(env) { [200, {"content-type" => "text/plain"}, ["generation=#{ENV['MWORKER_GENERATION']} pid #{Process.pid}\n"]] }`+"\n")
	// queue_requests false: without it, a connection puma has accepted
	// but not yet read a byte from when it stops is closed unanswered
	// (its reactor takes it for an idle keep-alive one): 2 of 16,000
	// fresh-connection requests failed over 10 reloads.
	conf := filepath.Join(dir, "puma.rb")
	writeFile(t, conf, "bind_to_activated_sockets 'only'\nqueue_requests false\n")
	recipe{
		workers:    2,
		options:    []string{"--ready", "notify"},
		command:    []string{puma, "-C", conf, "-w", "0", "-t", "4:4", "-e", "production", "--dir", dir, app},
		reloads:    10,
		keepAlive:  4,
		clients:    4,
		wantStatus: 143,
	}.run(t)
}
