// Command flipapp is github.com/cloudflare/tableflip's documented upgrade
// pattern (its README and its net/http example) serving webapp's handler:
// on SIGHUP the upgrader starts a new copy of the binary with the
// listener, the new copy calls Ready, and the old one leaves through
// http.Server.Shutdown. Nothing is changed from the documented pattern but
// the handler and the ready line.
//
//	flipapp --listen 127.0.0.1:8080 --pid-file PATH [--version V]
//
// Each generation prints "ready <pid>" on standard output before it calls
// Ready, which writes PATH.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/baton-dev/baton/internal/hello"
)

func main() {
	var (
		listenAddr = flag.String("listen", "localhost:8080", "`Address` to listen on")
		pidFile    = flag.String("pid-file", "", "`Path` to pid file")
		version    = flag.String("version", "tableflip", "`value` of X-Webapp-Version")
	)
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("%d ", os.Getpid()))

	upg, err := tableflip.New(tableflip.Options{
		PIDFile: *pidFile,
	})
	if err != nil {
		panic(err)
	}
	defer upg.Stop()

	// Do an upgrade on SIGHUP
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			err := upg.Upgrade()
			if err != nil {
				log.Println("Upgrade failed:", err)
			}
		}
	}()

	// Listen must be called before Ready
	ln, err := upg.Listen("tcp", *listenAddr)
	if err != nil {
		log.Fatalln("Can't listen:", err)
	}

	server := http.Server{
		Handler:           hello.New(*version, 0),
		ReadHeaderTimeout: hello.ReadHeaderTimeout,
		IdleTimeout:       hello.IdleTimeout,
	}

	go func() {
		err := server.Serve(ln)
		if err != http.ErrServerClosed {
			log.Println("HTTP server:", err)
		}
	}()

	fmt.Printf("ready %d\n", os.Getpid())
	if err := upg.Ready(); err != nil {
		panic(err)
	}
	<-upg.Exit()

	// Make sure to set a deadline on exiting the process
	// after upg.Exit() is closed. No new upgrades can be
	// performed if the parent doesn't exit.
	time.AfterFunc(30*time.Second, func() {
		log.Println("Graceful shutdown timed out")
		os.Exit(1)
	})

	// Wait for connections to drain.
	server.Shutdown(context.Background())
}
