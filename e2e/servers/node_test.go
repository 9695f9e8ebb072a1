package servers

import (
	"path/filepath"
	"testing"
)

// nodeServer is the recipe's server: it listens on fd 3 and drains on
// SIGTERM. Its handler is installed before it listens, so a worker that
// accepts can be told to stop. server.close stops accepting and, since
// node 19, closes the idle keep-alive connections; it calls back once the
// busy ones have answered.
const nodeServer = `const http = require('http');
const server = http.createServer((req, res) => {
	res.end('generation=' + process.env.MWORKER_GENERATION + ' pid ' + process.pid + '\n');
});
process.on('SIGTERM', () => {
	server.close(() => process.exit(0));
});
server.listen({fd: 3});
`

// TestNode runs the node recipe of docs/servers.md.
func TestNode(t *testing.T) {
	t.Parallel()
	node := need(t, "node", "nodejs")
	script := filepath.Join(t.TempDir(), "server.js")
	writeFile(t, script, nodeServer)
	recipe{
		workers:   2,
		options:   []string{"--ready", "1s"},
		command:   []string{node, script},
		reloads:   10,
		keepAlive: 4,
		clients:   4,
	}.run(t)
}
