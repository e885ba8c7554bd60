package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// Class is the outcome of one request: ClassOK or one kind of failure.
type Class uint8

// The outcomes of a request. See the package documentation for their exact
// meaning.
const (
	ClassOK Class = iota
	ClassRefused
	ClassReset
	ClassEOF
	ClassTimeout
	ClassStatus
	ClassTruncated
	ClassOther

	numClasses = iota
)

var classNames = [numClasses]string{"ok", "refused", "reset", "eof", "timeout", "status", "truncated", "other"}

// String returns the lower-case name of c ("ok", "refused", "eof", ...).
func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// MarshalText encodes c as its name.
func (c Class) MarshalText() ([]byte, error) {
	if int(c) >= len(classNames) {
		return nil, fmt.Errorf("load: unknown class %d", uint8(c))
	}
	return []byte(classNames[c]), nil
}

// UnmarshalText decodes a name written by MarshalText.
func (c *Class) UnmarshalText(b []byte) error {
	for i, n := range classNames {
		if n == string(b) {
			*c = Class(i)
			return nil
		}
	}
	return fmt.Errorf("load: unknown class %q", b)
}

// Mode says how clients use connections.
type Mode uint8

const (
	// KeepAlive: each client reuses one connection until the server ends it.
	KeepAlive Mode = iota
	// NewConnection: one TCP connection per request.
	NewConnection
)

// String returns "keepalive" or "newconn".
func (m Mode) String() string {
	switch m {
	case KeepAlive:
		return "keepalive"
	case NewConnection:
		return "newconn"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "keepalive" or "newconn".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "keepalive":
		return KeepAlive, nil
	case "newconn":
		return NewConnection, nil
	}
	return 0, fmt.Errorf("load: unknown mode %q (want keepalive or newconn)", s)
}

// MarshalText encodes m as its name.
func (m Mode) MarshalText() ([]byte, error) {
	if m > NewConnection {
		return nil, fmt.Errorf("load: unknown mode %d", uint8(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText decodes a name written by MarshalText.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// classify maps a transport error to a failure class. received is the
// number of response bytes read for the request; sawEOF says whether the
// connection reported end of stream while reading it.
func classify(err error, received int64, sawEOF bool) Class {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return ClassReset
	case isTimeout(err):
		return ClassTimeout
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), sawEOF:
		if received == 0 {
			return ClassEOF
		}
		return ClassTruncated
	}
	return ClassOther
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
