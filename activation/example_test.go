package activation_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"

	"github.com/baton-dev/baton/activation"
)

// Under systemd the listener is the socket named "http" (FileDescriptorName=http);
// started by hand, Listen binds the fallback address instead.
func ExampleListen() {
	set, err := activation.Listen(context.Background(),
		activation.Spec{Name: "http", Address: "127.0.0.1:0"},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()

	l, err := set.Listener("http")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(l)
	defer srv.Close()

	fmt.Println(set.Source(), set.Names())
	// Output: bound [http]
}

// A running generation starts the next one and hands it its listeners. The
// child's Listen, given the same Specs, returns them with Source Inherited.
func ExampleSet_Export() {
	set, err := activation.Listen(context.Background(),
		activation.Spec{Name: "http", Address: "127.0.0.1:8080"},
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer set.Close()

	cmd := exec.Command("/usr/bin/webapp", "serve")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	files, env := set.Export(3 + len(cmd.ExtraFiles))
	cmd.ExtraFiles = append(cmd.ExtraFiles, files...)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		fmt.Println(err)
		return
	}
	// Once the new generation says it is ready: stop accepting, drain,
	// then set.Close (which leaves any unix socket path in place).
}
