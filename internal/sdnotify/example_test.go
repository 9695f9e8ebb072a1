package sdnotify_test

import (
	"fmt"

	"github.com/mworker/mworker/internal/sdnotify"
)

func ExampleParse() {
	m, err := sdnotify.Parse([]byte("READY=1\nSTATUS=listening on :8080\n"))
	fmt.Println(m.Ready, err)
	fmt.Println(m.Status())
	_, err = sdnotify.Parse([]byte("READY=yes"))
	fmt.Println(err)
	// Output:
	// true <nil>
	// listening on :8080 true
	// sdnotify: malformed notify message: line 1 "READY=yes": READY must be 1
}

func ExampleJoin() {
	fmt.Printf("%q\n", sdnotify.Join(sdnotify.Ready(4242), sdnotify.Status("reload failed: rolled back")))
	// Output: "READY=1\nMAINPID=4242\nSTATUS=reload failed: rolled back"
}
