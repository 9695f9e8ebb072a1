package listen

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	tests := []struct {
		in   string
		want Spec
	}{
		{"tcp://127.0.0.1:8080", Spec{Name: "127.0.0.1_8080", Network: TCP, Address: "127.0.0.1:8080"}},
		{"127.0.0.1:8080", Spec{Name: "127.0.0.1_8080", Network: TCP, Address: "127.0.0.1:8080"}},
		{":8080", Spec{Name: "_8080", Network: TCP, Address: ":8080"}},
		{"tcp://:8080", Spec{Name: "_8080", Network: TCP, Address: ":8080"}},
		{"[::1]:80", Spec{Name: "[__1]_80", Network: TCP, Address: "[::1]:80"}},
		{"localhost:0080", Spec{Name: "localhost_80", Network: TCP, Address: "localhost:80"}},
		{"web=:8080", Spec{Name: "web", Network: TCP, Address: ":8080"}},
		{"admin=tcp://[::1]:9000", Spec{Name: "admin", Network: TCP, Address: "[::1]:9000"}},
		{"unix:///run/app.sock", Spec{Name: "/run/app.sock", Network: Unix, Address: "/run/app.sock", Mode: 0o666}},
		{"api=unix:///run/app.sock", Spec{Name: "api", Network: Unix, Address: "/run/app.sock", Mode: 0o666}},
		// The '=' belongs to the path: what precedes it holds ':' and '/'.
		{"unix:///tmp/a=b", Spec{Name: "/tmp/a=b", Network: Unix, Address: "/tmp/a=b", Mode: 0o666}},
		{"unix:///tmp/é\tx:y", Spec{Name: "/tmp/___x_y", Network: Unix, Address: "/tmp/é\tx:y", Mode: 0o666}},
	}
	for _, tt := range tests {
		got, err := ParseSpec(tt.in)
		if err != nil {
			t.Errorf("ParseSpec(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSpec(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseSpecRejects(t *testing.T) {
	tests := []struct{ in, why string }{
		{"", "not HOST:PORT"},
		{"8080", "not HOST:PORT"},
		{"localhost", "not HOST:PORT"},
		{"127.0.0.1:http", `port "http" is not a number`},
		{"127.0.0.1:65536", `port "65536" is not a number`},
		{"127.0.0.1:-1", `port "-1"`},
		{"udp://127.0.0.1:53", "unknown scheme"},
		{"unix://run/app.sock", "is not absolute"},
		{"unix://", "is not absolute"},
		{"unix:///" + strings.Repeat("x", 120), "the kernel allows 107"},
		{"=:8080", "empty NAME"},
		{"my web=:8080", "use printable ASCII"},
		{strings.Repeat("n", 256) + "=:80", "at most 255"},
		{"tcp://a b:80", "is not a host name"},
	}
	for _, tt := range tests {
		_, err := ParseSpec(tt.in)
		if err == nil {
			t.Errorf("ParseSpec(%q) succeeded, want an error", tt.in)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, ErrBadSpec) {
			t.Errorf("ParseSpec(%q) = %v, does not wrap ErrBadSpec", tt.in, err)
		}
		if !strings.HasPrefix(msg, "listen: ") || !strings.Contains(msg, fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParseSpec(%q) = %q, want the package prefix and the value quoted", tt.in, msg)
		}
		if !strings.Contains(msg, tt.why) {
			t.Errorf("ParseSpec(%q) = %q, want it to say %q", tt.in, msg, tt.why)
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("ParseSpec(%q) = %q, want one line", tt.in, msg)
		}
	}
}

func TestParseSpecErrorNamesForms(t *testing.T) {
	_, err := ParseSpec("8080")
	if err == nil || !strings.Contains(err.Error(), "tcp://HOST:PORT") || !strings.Contains(err.Error(), "unix:///PATH") {
		t.Fatalf("ParseSpec(8080) = %v, want the accepted forms listed", err)
	}
}

func TestParseSpecsRefusesDuplicateAddress(t *testing.T) {
	_, err := ParseSpecs([]string{"a=127.0.0.1:80", "b=tcp://127.0.0.1:080"})
	if err == nil || !strings.Contains(err.Error(), `already given by "a=127.0.0.1:80"`) {
		t.Fatalf("ParseSpecs = %v, want the duplicate named", err)
	}
	specs, err := ParseSpecs([]string{"a=127.0.0.1:80", "a=127.0.0.1:81"})
	if err != nil || len(specs) != 2 {
		t.Fatalf("ParseSpecs with a shared name = %v, %v; systemd allows shared names", specs, err)
	}
	if specs, err := ParseSpecs([]string{":0", ":0"}); err != nil || len(specs) != 2 {
		t.Fatalf("ParseSpecs(:0, :0) = %v, %v; port 0 is a new port each time", specs, err)
	}
}

// FuzzParseSpec: ParseSpec never panics; an accepted value has a name
// LISTEN_FDNAMES can carry and reads back from its String unchanged; a
// refused one gets one line naming the package and wrapping ErrBadSpec.
func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{":8080", "web=127.0.0.1:80", "tcp://[::1]:0", "unix:///run/a=b.sock", "a=unix:///x", "=:1", "[fe80::1%lo]:80", "host:65535", "x://y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		s, err := ParseSpec(v)
		if err != nil {
			if !errors.Is(err, ErrBadSpec) || !strings.HasPrefix(err.Error(), "listen: ") {
				t.Fatalf("ParseSpec(%q) = %v", v, err)
			}
			return
		}
		if s.Name == "" || len(s.Name) > 255 || (s.Network != TCP && s.Network != Unix) {
			t.Fatalf("ParseSpec(%q) = %+v", v, s)
		}
		for i := 0; i < len(s.Name); i++ {
			if c := s.Name[i]; c == ':' || c < ' ' || c > '~' {
				t.Fatalf("ParseSpec(%q) gives name %q, which LISTEN_FDNAMES cannot carry", v, s.Name)
			}
		}
		again, err := ParseSpec(s.String())
		if err != nil || again != s {
			t.Fatalf("ParseSpec(%q) = %+v; its String %q reads back as %+v, %v", v, s, s.String(), again, err)
		}
	})
}
