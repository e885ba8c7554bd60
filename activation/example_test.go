package activation_test

import (
	"context"
	"fmt"
	"net/http"

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
