package activation

import (
	"errors"
	"fmt"
)

// Sentinels classify the errors of this package; match them with errors.Is.
// They are never returned bare: an *FDError or an *EnvError wraps them and
// says which descriptor, name or variable was wrong. When several things are
// wrong at once, Listen returns all of them joined (errors.Join), in
// descriptor order, then missing names in Spec order.
var (
	// ErrUnexpectedName: a descriptor was passed under a name no Spec asks for.
	ErrUnexpectedName = errors.New("unexpected name")
	// ErrMissing: a Spec's name was not passed (and, when nothing was
	// passed at all, the Spec has no fallback Address), or Set.Listener
	// was asked for a name the Set does not hold.
	ErrMissing = errors.New("missing")
	// ErrNotStream: a descriptor is not a listening stream socket (a
	// datagram or seqpacket socket, a connected or unlistened socket, or
	// not a socket at all).
	ErrNotStream = errors.New("not a listening stream socket")
	// ErrNotDatagram: a descriptor asked for as a datagram socket (a Spec
	// with a datagram Network) is not one.
	ErrNotDatagram = errors.New("not a datagram socket")
	// ErrDuplicateName: several descriptors were passed under one name
	// whose Spec does not set Multiple, or Set.Listener was asked for a
	// name that holds several listeners.
	ErrDuplicateName = errors.New("duplicate name")
	// ErrBadEnvironment: LISTEN_* or BATON_LISTEN_* are malformed or
	// inconsistent, or name descriptors that are not open.
	ErrBadEnvironment = errors.New("bad environment")
	// ErrBadSpec: a Spec is invalid (bad name, unknown network, a name
	// given twice).
	ErrBadSpec = errors.New("bad spec")
)

// FDError reports a problem with one named descriptor, or with one name when
// no descriptor is involved (FD is then -1: a missing name, a failed
// fallback bind, a bad Spec).
type FDError struct {
	FD   int    // the descriptor number in this process, -1 if none
	Name string // the descriptor's name (LISTEN_FDNAMES entry) or Spec name
	Err  error  // what was wrong; wraps one of the sentinels or a system error
}

func (e *FDError) Error() string {
	if e.FD < 0 {
		return fmt.Sprintf("activation: %q: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("activation: fd %d %q: %v", e.FD, e.Name, e.Err)
}

func (e *FDError) Unwrap() error { return e.Err }

// EnvError reports a malformed or inconsistent environment variable. Err
// wraps ErrBadEnvironment.
type EnvError struct {
	Var   string // the variable, e.g. "LISTEN_FDS"
	Value string // its value as read
	Err   error  // what was wrong
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("activation: %s=%q: %v", e.Var, e.Value, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

func badEnv(name, value, format string, args ...any) *EnvError {
	return &EnvError{Var: name, Value: value, Err: fmt.Errorf("%w: "+format, append([]any{ErrBadEnvironment}, args...)...)}
}
