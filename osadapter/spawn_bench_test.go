package osadapter

import (
	"os"
	"syscall"
	"testing"
)

// BenchmarkSpawn measures one worker's start until it has run /bin/true and
// been reaped, directly and through the trampoline (here the test binary,
// whose start costs more than mworker's: it also initializes testing).
func BenchmarkSpawn(b *testing.B) {
	for _, tc := range []struct {
		name   string
		listen bool
	}{{"direct", false}, {"trampoline", true}} {
		b.Run(tc.name, func(b *testing.B) {
			l := &loop{sys: realOS(), command: []string{"/bin/true"}, workerEnv: os.Environ()}
			l.fds.fstat = l.sys.Fstat
			if tc.listen {
				null, err := os.Open(os.DevNull)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := l.fds.addListener("null", null); err != nil {
					b.Fatal(err)
				}
				defer l.fds.closeAll()
			}
			for b.Loop() {
				pid, err := l.spawn(1, 0)
				if err != nil {
					b.Fatal(err)
				}
				var ws syscall.WaitStatus
				if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || ws.ExitStatus() != 0 {
					b.Fatalf("wait4: %v, status %v", err, ws)
				}
			}
		})
	}
}
