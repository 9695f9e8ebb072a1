package servers

import (
	"os"
	"path/filepath"
	"testing"
)

// wsgiApp answers every request with the line the load generator reads.
const wsgiApp = `import os

def app(environ, start_response):
    body = ("generation=%s slot=%s pid=%d\n" % (
        os.environ.get("MWORKER_GENERATION", ""), os.environ.get("MWORKER_SLOT", ""), os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
`

// gunicorn (Debian 12: 20.1) takes the socket from LISTEN_FDS when it is
// started without --bind, and stops gracefully on SIGTERM. See
// docs/servers.md, "gunicorn".
func TestGunicorn(t *testing.T) {
	t.Parallel()
	gunicorn := need(t, "gunicorn", "gunicorn")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "app.py"), wsgiApp)
	// MWORKER_GUNICORN_READY=1s compares a duration with notify, as
	// docs/servers.md reports.
	ready := os.Getenv("MWORKER_GUNICORN_READY")
	if ready == "" {
		ready = "notify"
	}
	recipe{
		workers:   2,
		options:   []string{"--ready", ready},
		command:   []string{gunicorn, "--workers", "2", "--chdir", dir, "app:app"},
		reloads:   10,
		keepAlive: 5,
		clients:   8,
	}.run(t)
}
