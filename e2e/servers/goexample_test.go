package servers

import (
	"testing"

	"github.com/mworker/mworker/internal/e2etest"
)

// The repository's own Go server, examples/httpworker (go-systemd, no
// knowledge of mworker): READY=1 on NOTIFY_SOCKET, drains on SIGTERM.
// It is ours, so keep-alive clients must see no failure either
// (docs/servers.md, "Go (examples/httpworker)").
func TestGoExample(t *testing.T) {
	t.Parallel()
	bin, err := e2etest.Build(t.TempDir(), "httpworker", "./examples/httpworker")
	if err != nil {
		t.Fatal(err)
	}
	recipe{
		workers:         2,
		options:         []string{"--ready", "notify"},
		command:         []string{bin},
		reloads:         10,
		keepAlive:       10,
		clients:         8,
		strictKeepAlive: true,
	}.run(t)
}
