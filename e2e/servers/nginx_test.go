package servers

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestNginx runs the nginx recipe of docs/servers.md: nginx takes the
// listener from NGINX=3; (--fd-env), with no shell wrapper, and drains on
// QUIT (TERM is its fast shutdown). Its answer names the pid of the nginx
// worker process (its configuration cannot read MWORKER_GENERATION), a
// child of mworker's worker: the load maps it to its generation.
func TestNginx(t *testing.T) {
	t.Parallel()
	nginx := need(t, "nginx", "nginx-light")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	// master_process on: nginx 1.22 crashes (SIGSEGV) at its first request
	// with master_process off and inherited sockets. The pid file is shared
	// by every instance: nothing reads it under mworker (it signals nginx
	// itself), and an instance that exits after another logs an alert that
	// it is gone.
	recipe{
		workers: 2,
		options: []string{"--fd-env", "NGINX={fds:;};", "--stop-signal", "QUIT", "--ready", "500ms"},
		command: []string{nginx, "-p", dir, "-e", "stderr", "-c", conf},
		config: func(port int) {
			writeFile(t, conf, fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	server {
		listen 127.0.0.1:%[2]d;
		location / { return 200 "pid $pid\n"; }
	}
}
`, dir, port))
		},
		reloads:   10,
		keepAlive: 4,
		clients:   4,
	}.run(t)
}
