package fsm_test

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mworker/mworker/fsm"
)

// The state diagram in docs/ is fsm.Graph() checked in, and the SVG is
// rendered from it. Regenerate both with
//
//	go generate ./fsm
//
// or rewrite only docs/fsm.dot with go test ./fsm -run Graph -update.

var (
	dotPath = filepath.Join("..", "docs", "fsm.dot")
	svgPath = filepath.Join("..", "docs", "fsm.svg")
)

func init() {
	// The golden scenarios of package fsm register -update; register it
	// here only if they no longer do, so that both files share one flag.
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files with the actual output")
	}
}

func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

func TestGraphGolden(t *testing.T) {
	got := fsm.Graph()
	if updating() {
		if err := os.WriteFile(dotPath, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s; render the SVG with go generate ./fsm", dotPath)
		return
	}
	want, err := os.ReadFile(dotPath)
	if err != nil {
		t.Fatalf("docs/fsm.dot missing (%v): run go generate ./fsm", err)
	}
	if string(want) != got {
		t.Fatalf("docs/fsm.dot is stale: run go generate ./fsm\n%s", firstDifference(string(want), got))
	}
}

// TestGraphDeterministic guards the golden test: stateless walks maps to
// draw the table, so an ordering that leaked from them would make the
// checked-in DOT flip between runs.
func TestGraphDeterministic(t *testing.T) {
	first := fsm.Graph()
	for i := range 200 {
		if g := fsm.Graph(); g != first {
			t.Fatalf("fsm.Graph() changed on call %d:\n%s", i+2, firstDifference(first, g))
		}
	}
}

// TestGraphNamesCallbacks fails when a callback or guard of the table is an
// anonymous function: stateless would draw it as func1 or a method value
// as name-fm, which tells a reader nothing.
func TestGraphNamesCallbacks(t *testing.T) {
	g := fsm.Graph()
	anon := regexp.MustCompile(`\bfunc\d+\b|-fm\b`)
	if loc := anon.FindStringIndex(g); loc != nil {
		t.Fatalf("the graph shows an anonymous callback %q near %q: give the callback a name in fsm's table",
			g[loc[0]:loc[1]], excerpt(g, loc[0]))
	}
	// The table must at least draw the named entry actions and guards it
	// has, or the check above proves nothing.
	for _, name := range []string{"spawnFirstGeneration", "execNewImage", "exitMaster", "isFresh", "isResumed"} {
		if !strings.Contains(g, name) {
			t.Errorf("the graph does not name %s", name)
		}
	}
}

// TestGraphSVGMatchesDOT checks that docs/fsm.svg was rendered from the
// checked-in docs/fsm.dot, without needing Graphviz: the generator stamps
// the SVG with the DOT's SHA-256.
func TestGraphSVGMatchesDOT(t *testing.T) {
	dot, err := os.ReadFile(dotPath)
	if err != nil {
		t.Fatalf("docs/fsm.dot missing (%v): run go generate ./fsm", err)
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatalf("docs/fsm.svg missing (%v): run go generate ./fsm with Graphviz installed (apt-get install graphviz)", err)
	}
	sum := sha256.Sum256(dot)
	stamp := "fsm.dot sha256 " + hex.EncodeToString(sum[:])
	if !strings.Contains(string(svg), stamp) {
		t.Fatalf("docs/fsm.svg was not rendered from docs/fsm.dot: run go generate ./fsm with Graphviz installed (apt-get install graphviz)")
	}
	if !strings.Contains(string(svg), "<svg") {
		t.Fatalf("docs/fsm.svg is not an SVG document")
	}
}

func firstDifference(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return "first difference at line " + strconv.Itoa(i+1) + ":\n  checked in: " + w + "\n  fsm.Graph(): " + g
		}
	}
	return "no line differs (trailing bytes?)"
}

func excerpt(s string, at int) string {
	lo, hi := max(0, at-40), min(len(s), at+40)
	return s[lo:hi]
}
