package upgrade

import (
	"fmt"
	"math"
	"strconv"
)

// inheritedFDs reads the hand-over variables (BATON_UPGRADE_FD,
// BATON_CONTROL_FD, BATON_UPGRADE_PID, BATON_UPGRADE_PARENT) through
// lookup, for a process with the given pid and parent pid, as Inherited
// does. It returns the handshake descriptor and the control socket's (-1
// when there is none); ErrNotInherited when the variables do not address
// this process; or an error for a value that is not a plain decimal
// descriptor number of at least 3, or a control socket that is the
// handshake's own descriptor (taking one descriptor twice would close it
// under the other).
func inheritedFDs(lookup func(string) (string, bool), pid, ppid int) (handshake, control int, err error) {
	get := func(k string) string { v, _ := lookup(k); return v }
	fdv, ctlv, parentv, pidv := get(envUpgradeFD), get(envControlFD), get(envParent), get(envPID)
	if fdv == "" {
		return -1, -1, ErrNotInherited
	}
	if pidv != strconv.Itoa(pid) && (parentv == "" || parentv != strconv.Itoa(ppid)) {
		return -1, -1, ErrNotInherited
	}
	if handshake, err = descriptor(envUpgradeFD, fdv); err != nil {
		return -1, -1, err
	}
	if ctlv == "" {
		return handshake, -1, nil
	}
	if control, err = descriptor(envControlFD, ctlv); err != nil {
		return -1, -1, err
	}
	if control == handshake {
		return -1, -1, fmt.Errorf("upgrade: %s=%q: the descriptor of %s too", envControlFD, ctlv, envUpgradeFD)
	}
	return handshake, control, nil
}

// descriptor parses the value v of the variable name as a descriptor
// number above stderr.
func descriptor(name, v string) (int, error) {
	n, ok := decimal(v)
	if !ok || n < 3 || n > math.MaxInt32 {
		return -1, fmt.Errorf("upgrade: %s=%q: want a descriptor number of at least 3", name, v)
	}
	return int(n), nil
}

// inheritedConnsFD reads BATON_CONNS_FD through lookup, for a process
// that took the given handshake and control descriptors (-1 for none)
// and files descriptors from firstFile on: the conns channel's
// descriptor, or -1 when there is none (an older previous generation).
// It must be a plain decimal number of at least 3, and none of the
// descriptors already taken.
func inheritedConnsFD(lookup func(string) (string, bool), handshake, control, firstFile, files int) (int, error) {
	v, _ := lookup(envConnsFD)
	if v == "" {
		return -1, nil
	}
	fd, err := descriptor(envConnsFD, v)
	if err != nil {
		return -1, err
	}
	switch {
	case fd == handshake:
		return -1, fmt.Errorf("upgrade: %s=%q: the descriptor of %s too", envConnsFD, v, envUpgradeFD)
	case fd == control:
		return -1, fmt.Errorf("upgrade: %s=%q: the descriptor of %s too", envConnsFD, v, envControlFD)
	case files > 0 && fd >= firstFile && fd < firstFile+files:
		return -1, fmt.Errorf("upgrade: %s=%q: the descriptor of a file of %s too", envConnsFD, v, envFiles)
	}
	return fd, nil
}
