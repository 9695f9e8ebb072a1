package e2etest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// UnitPrefix starts the first line of every unit file docs/systemd.md
// shows: "# /etc/systemd/system/NAME".
const UnitPrefix = "# /etc/systemd/system/"

// DocUnits returns the unit files of docs/systemd.md under root, by NAME:
// every ```ini block whose first line is UnitPrefix + NAME, as written.
// It fails when one of want is missing.
func DocUnits(root string, want ...string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "docs", "systemd.md"))
	if err != nil {
		return nil, err
	}
	units := make(map[string]string)
	var name string
	var body strings.Builder
	inBlock, first := false, false
	for line := range strings.SplitSeq(string(b), "\n") {
		switch {
		case !inBlock && strings.TrimSpace(line) == "```ini":
			inBlock, first, name = true, true, ""
			body.Reset()
		case inBlock && strings.TrimSpace(line) == "```":
			inBlock = false
			if name != "" {
				units[name] = body.String()
			}
		case inBlock:
			if first {
				first = false
				if n, ok := strings.CutPrefix(line, UnitPrefix); ok {
					name = n
				}
			}
			body.WriteString(line + "\n")
		}
	}
	for _, w := range want {
		if units[w] == "" {
			return nil, fmt.Errorf("docs/systemd.md has no ```ini block starting with %q", UnitPrefix+w)
		}
	}
	return units, nil
}
