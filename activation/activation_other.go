//go:build !unix

package activation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// errUnsupported is returned where descriptors would be passed in: this
// platform has no socket activation.
var errUnsupported = fmt.Errorf("activation: descriptor passing: %w", errors.ErrUnsupported)

func takeFiles(p passed) ([]*os.File, error) { return nil, errUnsupported }

func markCloseOnExec(fdRange) {}

func checkListening(*os.File) error { return errUnsupported }

func checkDatagram(*os.File) error { return errUnsupported }

func checkConnected(*os.File) error { return errUnsupported }

// packetFile returns no file, like listenerFile.
func packetFile(net.PacketConn) (*os.File, error) { return nil, nil }

// listenerFile returns no file: on this platform bound listeners cannot be
// handed on, so Files and Export return nothing.
func listenerFile(net.Listener) (*os.File, error) { return nil, nil }

// keepSocketPath does nothing: nothing is handed on on this platform.
func keepSocketPath(*net.UnixListener) {}

// removeStale removes nothing on this platform.
func removeStale(context.Context, string) error { return nil }
