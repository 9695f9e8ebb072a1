package proptest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// designPath is the contract whose invariants these tests check, read
// from the test's directory; designName is how messages name it.
var designPath = filepath.Join("..", "docs", "design.md")

const designName = "docs/design.md"

// TestDesignInvariants keeps the numbering of docs/design.md and of the
// tests' failure messages the same: a message says "invariant 3" so that a
// reader finds invariant 3 in the contract. It fails when the contract
// lists an invariant no message of these tests names (a promise nothing
// checks), or a message names one the contract lacks.
func TestDesignInvariants(t *testing.T) {
	doc, err := os.ReadFile(designPath)
	if err != nil {
		t.Fatalf("the contract %s is missing: %v", designName, err)
	}
	listed := designInvariants(string(doc))
	if len(listed) == 0 {
		t.Fatalf("%s has no numbered list under \"## Invariants\"", designName)
	}
	for i, n := range listed {
		if n != i+1 {
			t.Fatalf("%s numbers its invariants %v: want 1, 2, 3... in order", designName, listed)
		}
	}
	checked, err := checkedInvariants(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range listed {
		if !checked[n] {
			t.Errorf("%s lists invariant %d, which no failure message of proptest names (\"invariant %d: ...\")", designName, n, n)
		}
	}
	for n := range checked {
		if !slices.Contains(listed, n) {
			t.Errorf("proptest checks invariant %d, which %s does not list under \"## Invariants\"", n, designName)
		}
	}
}

// designInvariants returns the numbers of the top-level numbered list in
// the "## Invariants" section of the contract, in order.
func designInvariants(doc string) []int {
	_, sec, ok := strings.Cut(doc, "\n## Invariants\n")
	if !ok {
		return nil
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	var nums []int
	for _, m := range regexp.MustCompile(`(?m)^(\d+)\. `).FindAllStringSubmatch(sec, -1) {
		n, _ := strconv.Atoi(m[1])
		nums = append(nums, n)
	}
	return nums
}

// invariantMessage matches the start of a failure message that names the
// invariants it breaks: "invariant 3: ..." or "invariants 1, 5: ...".
var invariantMessage = regexp.MustCompile(`^invariants? (\d+(?:, \d+)*)[: ]`)

// checkedInvariants reads the Go files of dir and returns the invariant
// numbers that their string literals name as above. Only literals count,
// not comments: a number counts when a check can fail with it.
func checkedInvariants(dir string) (map[int]bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	nums := map[int]bool{}
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			return nil, err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			m := invariantMessage.FindStringSubmatch(s)
			if m == nil {
				return true
			}
			for _, w := range strings.Split(m[1], ", ") {
				k, _ := strconv.Atoi(w)
				nums[k] = true
			}
			return true
		})
	}
	return nums, nil
}
