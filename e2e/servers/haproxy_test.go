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
	haproxy := nativeNeed(t, "haproxy", "haproxy")
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "haproxy.cfg")
	nativeWrite(t, conf, fmt.Sprintf(`global
	log stderr format short local0 notice
defaults
	mode http
	log global
	timeout client 10s
	timeout server 10s
	timeout connect 5s
frontend web
	bind fd@3
	http-request return status 200 content-type text/plain lf-string "pid %%pid port %d\n"
`, port))
	nativeRecipe{
		workers: 2,
		options: []string{"-n", "2", "--stop-signal", "USR1", "--ready", "1s"},
		command: []string{haproxy, "-db", "-f", conf},
	}.run(t, dir, port)
}
