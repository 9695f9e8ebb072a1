package fsm_test

import (
	"strings"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// A request with an argument its command does not take is refused with
// one reply naming the command and the argument, and changes nothing: the
// same request without the argument is still served.
func TestControlRequestUnexpectedArgument(t *testing.T) {
	m, err := fsm.New(benchConfig(2))
	if err != nil {
		t.Fatal(err)
	}
	m.Step(fsm.Start{})
	for _, c := range fsm.Commands {
		if c.Arg != "" {
			continue
		}
		acts := m.Step(fsm.ControlRequest{ID: 7, Command: c.Command, Arg: "4"})
		if len(acts) != 1 {
			t.Fatalf("%s 4: actions %v, want one Reply", c.Name, acts)
		}
		r, ok := acts[0].(fsm.Reply)
		want := c.Name + ` takes no argument, got "4": send ` + c.Name + " alone"
		if !ok || r.ID != 7 || r.OK || r.Error != want {
			t.Errorf("%s 4: %v, want the error %q", c.Name, acts[0], want)
		}
	}
	acts := m.Step(fsm.ControlRequest{ID: 8, Command: fsm.CmdStatus})
	if r, ok := acts[0].(fsm.Reply); !ok || !r.OK || r.Status == nil {
		t.Errorf("status after the refusals: %v", acts)
	}
	if s := (fsm.ControlRequest{ID: 3, Command: fsm.CmdReload, Arg: "a b"}).String(); !strings.HasSuffix(s, ` reload arg="a b"`) {
		t.Errorf("String() = %q", s)
	}
}
