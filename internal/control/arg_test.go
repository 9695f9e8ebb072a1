package control

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mworker/mworker/fsm"
)

// A request line "CMD ARG" reaches the event loop with its argument, for
// the machine to judge; an unknown command is still refused at the door.
func TestRequestArgumentReachesTheLoop(t *testing.T) {
	t.Parallel()
	path := sockPath(t)
	_, reqs := serve(t, path)
	if a := rawAsk(t, path, []byte("bogus 4\n")); a.OK || !strings.Contains(a.Error, `unknown request "bogus 4": use `+fsm.CommandList("or")) {
		t.Fatalf("unknown command with an argument: %+v", a)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("status   4 x\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-reqs:
		defer r.Conn.Close()
		if r.Command.String() != "status" || r.Arg != "4 x" {
			t.Fatalf("request %v %q, want status with the argument \"4 x\"", r.Command, r.Arg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the loop")
	}
}
