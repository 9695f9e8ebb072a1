package fsm

import (
	"strconv"
	"strings"
)

// CommandSpec describes one control command. Commands is the one table of
// them: the request parser, the client, the usage texts and the error
// replies that list the commands are all written from it, so that a new
// command cannot be known to one and missing from another.
type CommandSpec struct {
	Command Command
	Name    string // the request word and the mworker subcommand
	Arg     string // placeholder of its argument ("N"), or "" when it takes none
	Help    string // one line for the usage text
	Waits   bool   // the client waits for the outcome (a new generation), not just an acknowledgement
	JSON    bool   // the answer carries a body worth printing with --json
}

// Commands lists the control commands in the order the usage texts give
// them.
var Commands = []CommandSpec{
	{Command: CmdReload, Name: "reload", Waits: true,
		Help: "start a new generation, wait until it is ready or rolled back"},
	{Command: CmdStatus, Name: "status", JSON: true,
		Help: "print the master and its workers (a table, or JSON with --json)"},
	{Command: CmdStop, Name: "stop",
		Help: "begin a soft stop, as SIGUSR1"},
	{Command: CmdScale, Name: "scale", Arg: "N",
		Help: "set the number of workers to N, or change it by +K or -K; new slots start at once, removed ones get --stop-signal"},
	{Command: CmdRestart, Name: "restart", Arg: "SLOT", Waits: true,
		Help: "replace the worker of slot SLOT without downtime: the new one starts, becomes ready, then the old one stops"},
}

// LookupCommand returns the entry of Commands named name.
func LookupCommand(name string) (CommandSpec, bool) {
	for _, c := range Commands {
		if c.Name == name {
			return c, true
		}
	}
	return CommandSpec{}, false
}

// Synopsis is the command as its usage line writes it: the name, then the
// placeholder of its argument if it takes one ("scale N").
func (c CommandSpec) Synopsis() string {
	if c.Arg == "" {
		return c.Name
	}
	return c.Name + " " + c.Arg
}

// CommandNames returns the names of Commands, in order.
func CommandNames() []string {
	names := make([]string, len(Commands))
	for i, c := range Commands {
		names[i] = c.Name
	}
	return names
}

// CommandList returns the names of Commands as a phrase joined by conj:
// CommandList("or") is "reload, status, stop, scale or restart".
func CommandList(conj string) string {
	return JoinWords(CommandNames(), conj)
}

// JoinWords joins words as English does: "a, b or c" for conj "or".
func JoinWords(words []string, conj string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " " + conj + " " + words[len(words)-1]
}

// requestError is why the machine refuses r, or "" when r names a command
// of Commands with the argument that command takes (or none).
func requestError(r ControlRequest) string {
	spec, ok := LookupCommand(r.Command.String())
	switch {
	case !ok:
		return "unknown command " + r.Command.String() + ": use " + CommandList("or")
	case spec.Arg == "" && r.Arg != "":
		return spec.Name + " takes no argument, got " + strconv.Quote(r.Arg) + ": send " + spec.Name + " alone"
	case spec.Arg != "" && r.Arg == "":
		return spec.Name + " needs its argument: send " + spec.Name + " " + spec.Arg
	}
	return ""
}
