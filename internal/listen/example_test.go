package listen_test

import (
	"fmt"

	"github.com/mworker/mworker/internal/listen"
)

func ExampleParseSpec() {
	for _, v := range []string{"web=:8080", "127.0.0.1:8443", "admin=unix:///run/app/admin.sock", "8080"} {
		s, err := listen.ParseSpec(v)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s -> name %q, %s\n", v, s.Name, s.URL())
	}
	// Output:
	// web=:8080 -> name "web", tcp://:8080
	// 127.0.0.1:8443 -> name "127.0.0.1_8443", tcp://127.0.0.1:8443
	// admin=unix:///run/app/admin.sock -> name "admin", unix:///run/app/admin.sock
	// listen: "8080": bad --listen value: not HOST:PORT (missing port in address); use [NAME=]tcp://HOST:PORT, [NAME=]HOST:PORT or [NAME=]unix:///PATH
}

func ExampleWorkerEnv() {
	fmt.Println(listen.WorkerEnv([]string{"web", "admin"}))
	// Output: [LISTEN_FDS=2 LISTEN_FDNAMES=web:admin]
}
