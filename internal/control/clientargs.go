package control

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mworker/mworker/fsm"
)

// EnvControl names the environment variable that gives the client commands
// their --control when the command line does not.
const EnvControl = "MWORKER_CONTROL"

// clientOptions is a parsed client command line.
type clientOptions struct {
	path    string // --control, or $MWORKER_CONTROL
	json    bool
	wait    bool // stop --wait
	timeout time.Duration
	arg     string // the command's argument, when it takes one
	help    bool
}

// clientOption is one option of a client command. The table drives the
// parser and the options section of --help, as runOptions does for
// "mworker run".
type clientOption struct {
	long string // "--control"
	arg  string // the value's placeholder, "" for a switch
	help string
	only string // the one command that takes it, or "" for all
	set  func(o *clientOptions, value string) error
}

var clientOptionTable = []clientOption{
	{long: "--control", arg: "PATH",
		help: "the master's control socket, the path given to mworker run --control (default $" + EnvControl + ")",
		set: func(o *clientOptions, v string) error {
			if v == "" {
				return errors.New("empty --control: give the path given to mworker run --control, such as /run/app.sock")
			}
			o.path = v
			return nil
		}},
	{long: "--json",
		help: "print the master's answer as it came, one JSON object a line",
		set:  func(o *clientOptions, _ string) error { o.json = true; return nil }},
	{long: "--wait", only: "stop",
		help: "return once the master has exited, with its exit status",
		set:  func(o *clientOptions, _ string) error { o.wait = true; return nil }},
	{long: "--timeout", arg: "D",
		help: "give up after D, connecting included",
		set: func(o *clientOptions, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return fmt.Errorf("bad --timeout %q: use a positive duration such as 500ms, 10s or 1m", v)
			}
			o.timeout = d
			return nil
		}},
}

// optionsOf returns the options cmd takes, in the order --help lists them.
func optionsOf(cmd string) []clientOption {
	var opts []clientOption
	for _, o := range clientOptionTable {
		if o.only == "" || o.only == cmd {
			opts = append(opts, o)
		}
	}
	return opts
}

func lookupClientOption(cmd, name string) *clientOption {
	for _, o := range optionsOf(cmd) {
		if o.long == name {
			return &o
		}
	}
	return nil
}

// defaultTimeout is the --timeout a command gets when none is given.
func defaultTimeout(spec fsm.CommandSpec, wait bool) time.Duration {
	if spec.Waits || wait {
		return DefaultReloadTimeout
	}
	return DefaultTimeout
}

// UsageFlags is what follows "mworker CMD [ARG]" in the usage lines: the
// options of CMD. --control is written as required: it is, unless
// $MWORKER_CONTROL is set.
func UsageFlags(spec fsm.CommandSpec) string {
	var words []string
	for _, o := range optionsOf(spec.Name) {
		if o.long == "--control" {
			words = append(words, optionTerm(o))
		} else {
			words = append(words, "["+optionTerm(o)+"]")
		}
	}
	return strings.Join(words, " ")
}

// usageLine is the one line a bad command line is reminded of.
func usageLine(spec fsm.CommandSpec) string {
	return "usage: mworker " + spec.Synopsis() + " " + UsageFlags(spec)
}

// parseClientArgs parses the words after "mworker CMD" with the rules of
// "mworker run": "--opt value" or "--opt=value", long options only, "--"
// ends the options; the argument of a command that takes one may come
// before, between or after them, and a word such as -1 is an argument,
// not an option. The error is the one line for stderr, without the
// "mworker CMD: " prefix; every error is a usage error (status 2).
// lookupEnv gives $MWORKER_CONTROL.
func parseClientArgs(spec fsm.CommandSpec, args []string, lookupEnv func(string) (string, bool)) (clientOptions, error) {
	o := clientOptions{timeout: -1}
	takesArg := spec.Arg != ""
	var words []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			words = append(words, args[i+1:]...)
			i = len(args)
			continue
		case a == "-h" || a == "--help":
			o.help = true
			return o, nil
		case a == "-" || !strings.HasPrefix(a, "-") || takesArg && allDigits(a[1:]):
			words = append(words, a)
			continue
		}
		name, value, hasValue := strings.Cut(a, "=")
		opt := lookupClientOption(spec.Name, name)
		if opt == nil {
			return o, unknownClientOption(spec, name)
		}
		switch {
		case opt.arg == "" && hasValue:
			return o, fmt.Errorf("%s takes no value: write %s alone", name, name)
		case opt.arg != "" && !hasValue:
			if i+1 >= len(args) {
				return o, fmt.Errorf("%s needs a value: write %s %s", name, name, opt.arg)
			}
			i++
			value = args[i]
		}
		if err := opt.set(&o, value); err != nil {
			return o, err
		}
	}
	hasArg := takesArg && len(words) > 0
	if hasArg {
		o.arg, words = words[0], words[1:]
	}
	rule := argRules[spec.Name]
	switch {
	case len(words) > 0:
		return o, fmt.Errorf("unexpected argument %q; %s", words[0], usageLine(spec))
	case takesArg && !hasArg:
		return o, fmt.Errorf("needs %s: mworker %s --control PATH (%s)", spec.Arg, spec.Synopsis(), rule.forms)
	}
	if hasArg && rule.check != nil {
		if bad := rule.check(o.arg); bad != "" {
			return o, fmt.Errorf("bad %s %q: %s", spec.Arg, o.arg, bad)
		}
	}
	if o.path == "" {
		if v, ok := lookupEnv(EnvControl); ok && v != "" {
			o.path = v
		} else {
			return o, fmt.Errorf("no control socket: give --control PATH (the path given to mworker run --control) or set %s", EnvControl)
		}
	}
	if o.timeout < 0 {
		o.timeout = defaultTimeout(spec, o.wait)
	}
	return o, nil
}

func unknownClientOption(spec fsm.CommandSpec, name string) error {
	// "-control" for "--control": say what was meant.
	if !strings.HasPrefix(name, "--") {
		if o := lookupClientOption(spec.Name, "-"+name); o != nil {
			return fmt.Errorf("unknown option %q: did you mean %s? (see mworker %s --help)", name, o.long, spec.Name)
		}
	}
	return fmt.Errorf("unknown option %q: see mworker %s --help for the options", name, spec.Name)
}

// exitStatuses are the exit statuses --help gives for each command of
// fsm.Commands (TestEveryCommandHasHelp), bad command line (2) aside.
var exitStatuses = map[string][][2]string{
	"reload": {
		{"0", "the new generation is ready"},
		{"1", "the reload failed and was rolled back, or no answer came (the reason on stderr)"},
	},
	"status": {
		{"0", "the status was printed"},
		{"1", "no answer from the master (the reason on stderr)"},
	},
	"stop": {
		{"0", "the soft stop has begun"},
		{"1", "the master refused it or did not answer (the reason on stderr)"},
		{"0..255", "with --wait: the master's own exit status, once it has exited (docs/design.md, \"Exit status of the master\"); 1 with the reason on stderr when it cannot be known"},
	},
	"scale": {
		{"0", "the new size is accepted: new slots are starting, removed ones stopping"},
		{"1", "the master refused it (the reason on stderr) or did not answer"},
	},
	"restart": {
		{"0", "the slot's new worker is ready and the old one is stopping"},
		{"1", "the new worker failed, the slot does not exist, or no answer came (the reason on stderr)"},
	},
}

// clientHelp is the text of "mworker CMD --help".
func clientHelp(spec fsm.CommandSpec) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\n%s.\n", usageLine(spec), upperFirst(spec.Help))
	if spec.Arg != "" {
		fmt.Fprintf(&b, "\n%s is %s; it may come before or after the options.\n", spec.Arg, argRules[spec.Name].forms)
	}
	b.WriteString("\nOptions:\n")
	opts := optionsOf(spec.Name)
	width := 0
	for _, o := range opts {
		width = max(width, len(optionTerm(o)))
	}
	for _, o := range opts {
		help := o.help
		switch o.long {
		case "--timeout":
			if spec.Name == "stop" {
				help += fmt.Sprintf("; with --wait, the whole stop until the master has exited (default %v, %v with --wait)", defaultTimeout(spec, false), defaultTimeout(spec, true))
			} else {
				help += fmt.Sprintf(" (default %v)", defaultTimeout(spec, false))
			}
		}
		fmt.Fprintf(&b, "  %-*s  %s\n", width, optionTerm(o), help)
	}
	fmt.Fprintf(&b, "  %-*s  %s\n", width, "-h, --help", "print this help")
	b.WriteString("\nExit status:\n")
	for _, s := range exitStatuses[spec.Name] {
		fmt.Fprintf(&b, "  %-6s  %s\n", s[0], s[1])
	}
	fmt.Fprintf(&b, "  %-6s  %s\n", "2", "bad command line (one line on stderr says what and how to fix it)")
	return b.String()
}

func optionTerm(o clientOption) string {
	if o.arg == "" {
		return o.long
	}
	return o.long + " " + o.arg
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
