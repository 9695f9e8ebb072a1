package peers

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated part of docs/peers.md from the table of cases")

const (
	docBegin = "<!-- BEGIN peers table: generated from e2e/peers/cases_test.go by `go test ./e2e/peers -run TestPeersDoc -update` -->"
	docEnd   = "<!-- END peers table -->"
)

// peersTable is the generated part of docs/peers.md: the counts and one
// row per case.
func peersTable() string {
	var b strings.Builder
	design := 0
	for _, c := range cases {
		if c.design != "" {
			design++
		}
	}
	fmt.Fprintf(&b, "Ported %d cases; mworker passes %d as the peer's own test asserts; %d are design choices, for which the test asserts mworker's documented alternative instead.\n\n",
		len(cases), len(cases)-design, design)
	b.WriteString("| # | source | what it checks | tini | dumb-init | mworker | why (design choices) |\n|---|---|---|---|---|---|---|\n")
	na := func(s string) string {
		if s == "" {
			return "n/a"
		}
		return s
	}
	for i, c := range cases {
		mw, why := "pass", ""
		if c.design != "" {
			mw, why = "design choice", c.design
		}
		cells := []string{fmt.Sprint(i + 1), c.source + " (`" + c.name + "`)", c.checks, na(c.tini), na(c.dumb), mw, why}
		for j, s := range cells {
			cells[j] = strings.ReplaceAll(s, "|", `\|`)
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(cells, " | "))
	}
	return b.String()
}

// TestPeersDoc fails when docs/peers.md's table is not the one the cases
// give (-update rewrites it).
func TestPeersDoc(t *testing.T) {
	path := filepath.Join(moduleRoot, "docs", "peers.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no generated table between %q and %q", path, docBegin, docEnd)
	}
	want := doc[:i] + docBegin + "\n" + peersTable() + doc[j:]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("docs/peers.md's table differs from the cases: run go test ./e2e/peers -run TestPeersDoc -update and review the diff")
}
