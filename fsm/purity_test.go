package fsm

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fsm is pure: it decides, the caller acts. Its own files (not its tests,
// not what fmt or stateless import) must not reach the OS, the network,
// a logger, the wall clock or the scheduler.
func TestPurity(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range impurities(fset, name, src) {
			t.Error(v)
		}
		checked++
	}
	// machine.go, callbacks.go, event.go, action.go, config.go, argv.go,
	// signal.go at least: a glob gone wrong must not pass as clean.
	if checked < 7 {
		t.Fatalf("checked %d non-test files of fsm; expected at least 7", checked)
	}
}

// The checker itself must catch each kind of impurity.
func TestPurityCheckerCatches(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"os", `import "os"`, `imports "os"`},
		{"os/exec", `import "os/exec"`, `imports "os/exec"`},
		{"os/signal renamed", `import sig "os/signal"`, `imports "os/signal"`},
		{"syscall", `import "syscall"`, `imports "syscall"`},
		{"x/sys", `import "golang.org/x/sys/unix"`, `imports "golang.org/x/sys/unix"`},
		{"net", `import "net"`, `imports "net"`},
		{"net/http", `import "net/http"`, `imports "net/http"`},
		{"log", `import "log"`, `imports "log"`},
		{"log/slog", `import "log/slog"`, `imports "log/slog"`},
		{"go statement", `func f() { go f() }`, "go statement"},
		{"time.Now", `import "time"; var _ = time.Now()`, "time.Now"},
		{"time.Since", `import "time"; var _ = time.Since`, "time.Since"},
		{"time.Sleep", `import "time"; func f() { time.Sleep(1) }`, "time.Sleep"},
		{"time.After", `import "time"; var _ = time.After(1)`, "time.After"},
		{"time.NewTimer", `import "time"; var _ = time.NewTimer(1)`, "time.NewTimer"},
		{"time.Tick", `import "time"; var _ = time.Tick(1)`, "time.Tick"},
		{"renamed time", `import clock "time"; var _ = clock.Now()`, "time.Now"},
		{"dot-imported time", `import . "time"; var _ Duration`, `dot-imports "time"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := "package fsm\n" + tt.src + "\n"
			got := impurities(token.NewFileSet(), "x.go", []byte(src))
			if !slices.ContainsFunc(got, func(v string) bool { return strings.Contains(v, tt.want) }) {
				t.Errorf("%q: got %q, want a violation mentioning %q", tt.src, got, tt.want)
			}
		})
	}
	clean := "package fsm\nimport (\"fmt\"; \"time\")\nvar _ = fmt.Sprint(time.Second, time.Duration(3).String())\n"
	if got := impurities(token.NewFileSet(), "x.go", []byte(clean)); len(got) > 0 {
		t.Errorf("clean source reported: %q", got)
	}
}

// impurities lists what in one source file breaks fsm's purity.
func impurities(fset *token.FileSet, name string, src []byte) []string {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", name, err)}
	}
	var out []string
	report := func(pos token.Pos, format string, a ...any) {
		out = append(out, fmt.Sprintf("%s: %s", fset.Position(pos), fmt.Sprintf(format, a...)))
	}
	timeNames := map[string]bool{}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		if forbiddenImport(path) {
			report(imp.Pos(), "imports %q: fsm must not touch the OS, the network or a logger; return an action instead", path)
		}
		if path == "time" {
			switch {
			case imp.Name == nil:
				timeNames["time"] = true
			case imp.Name.Name == ".":
				report(imp.Pos(), `dot-imports "time": the wall-clock check cannot see through it`)
			default:
				timeNames[imp.Name.Name] = true
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GoStmt:
			report(n.Pos(), "go statement: fsm runs on its caller's goroutine only")
		case *ast.SelectorExpr:
			if x, ok := n.X.(*ast.Ident); ok && timeNames[x.Name] && clockFuncs[n.Sel.Name] {
				report(n.Pos(), "time.%s: fsm has no clock; use SetTimer and TimerFired", n.Sel.Name)
			}
		}
		return true
	})
	return out
}

func forbiddenImport(path string) bool {
	for _, p := range []string{"os", "syscall", "net", "log", "golang.org/x/sys"} {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// clockFuncs read the wall clock or wait on it.
var clockFuncs = map[string]bool{
	"Now": true, "Since": true, "Until": true, "Sleep": true, "After": true,
	"AfterFunc": true, "NewTimer": true, "NewTicker": true, "Tick": true,
}
