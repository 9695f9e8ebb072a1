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
	res.end('pid ' + process.pid + '\n');
});
process.on('SIGTERM', () => {
	server.close(() => process.exit(0));
});
server.listen({fd: 3});
`

// TestNode runs the node recipe of docs/servers.md.
func TestNode(t *testing.T) {
	t.Parallel()
	node := nativeNeed(t, "node", "nodejs")
	dir := t.TempDir()
	port := freePort(t)
	script := filepath.Join(dir, "server.js")
	nativeWrite(t, script, nodeServer)
	nativeRecipe{
		workers: 2,
		options: []string{"-n", "2", "--ready", "1s"},
		command: []string{node, script},
	}.run(t, dir, port)
}
