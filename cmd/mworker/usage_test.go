package main

import (
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// Every control command of fsm.Commands is in the short usage, in the
// package documentation (which repeats the short usage), in the --control
// option of the manual and in the guide, and the command line dispatches it
// to the control client.
func TestUsageListsEveryCommand(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Fatal(err)
	}
	doc := f.Doc.Text()
	for _, c := range fsm.Commands {
		if !strings.Contains(shortUsage, "mworker "+c.Name+" ") {
			t.Errorf("usage has no line for %q:\n%s", c.Name, shortUsage)
		}
		if !strings.Contains(shortUsage, c.Help) {
			t.Errorf("usage does not give the help of %q (%q)", c.Name, c.Help)
		}
		var stdout, stderr bytes.Buffer
		if got := run([]string{c.Name, "--help"}, &stdout, &stderr); got != 0 || !strings.Contains(stdout.String(), "mworker "+c.Name) {
			t.Errorf("mworker %s --help = %d, %q, %q: not the control client's usage", c.Name, got, stdout.String(), stderr.String())
		}
	}
	// The package documentation repeats the short usage line by line.
	for _, line := range strings.Split(shortUsage, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "Run ") {
			continue
		}
		if !strings.Contains(doc, line) {
			t.Errorf("package documentation does not have the usage line %q", line)
		}
	}
	if want := "control socket for " + fsm.CommandList("and"); !strings.Contains(strings.Join(strings.Fields(doc), " "), want) {
		t.Errorf("package documentation does not say %q", want)
	}
	if help := strings.Join(strings.Fields(runManual()), " "); !strings.Contains(help, fsm.CommandList("and")) {
		t.Errorf("mworker run --help does not list %q", fsm.CommandList("and"))
	}
	guide, err := os.ReadFile("../../docs/guide.md")
	if err != nil {
		t.Fatal(err)
	}
	want := "`mworker " + strings.Join(fsm.CommandNames(), "|") + "`"
	if n := strings.Count(string(guide), "`mworker reload|"); n == 0 || n != strings.Count(string(guide), want) {
		t.Errorf("docs/guide.md names the control commands otherwise than %s", want)
	}
}
