package servers

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestHAProxy runs the HAProxy recipe of docs/servers.md: HAProxy binds
// fd@3, the listener mworker passes, and drains on USR1 (its soft stop;
// TERM is its fast one).
func TestHAProxy(t *testing.T) {
	t.Parallel()
	haproxy := need(t, "haproxy", "haproxy")
	conf := filepath.Join(t.TempDir(), "haproxy.cfg")
	recipe{
		workers: 2,
		options: []string{"--stop-signal", "USR1", "--ready", "1s"},
		command: []string{haproxy, "-db", "-f", conf},
		config: func(port int) {
			writeFile(t, conf, fmt.Sprintf(`global
	log stderr format short local0 notice
defaults
	mode http
	log global
	timeout client 10s
	timeout server 10s
	timeout connect 5s
frontend web
	bind fd@3
	http-request return status 200 content-type text/plain lf-string "generation=%%[env(MWORKER_GENERATION)] pid %%pid port %d\n"
`, port))
		},
		reloads:   10,
		keepAlive: 4,
		clients:   4,
	}.run(t)
}
