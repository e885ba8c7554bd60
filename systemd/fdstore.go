package systemd

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrBadFDName is returned by Store and RemoveStored for a name systemd
// would refuse: FDNAME= is 1 to 255 printable ASCII characters without ':'.
var ErrBadFDName = errors.New("systemd: bad FDNAME")

// StoreCapacity returns the service's FileDescriptorStoreMax=, which
// systemd 254 and later pass as $FDSTORE, and whether the variable was
// set. On systemd 252 and 253 the variable is never set, though the store
// works there too: the unit's settings are then the only source.
func StoreCapacity() (int, bool) {
	v, ok := os.LookupEnv("FDSTORE")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// Store gives copies of descriptors to the service manager's file
// descriptor store under name (FDSTORE=1 with FDNAME=name, the descriptors
// attached as SCM_RIGHTS), in one datagram. Anything with a descriptor
// will do: an *os.File, a listener, a *net.TCPConn. systemd keeps them while the service
// restarts and passes them to its next start in LISTEN_FDS, named by
// LISTEN_FDNAMES, where activation.Listen takes them by name like sockets
// of a .socket unit. The unit needs FileDescriptorStoreMax= large enough
// for everything stored; systemd closes what does not fit and logs
// "Cannot store more fds than FileDescriptorStoreMax=" (the sender is not
// told). A descriptor already in the store is not stored twice. The
// caller keeps its own descriptors. A nil Notifier stores nothing.
func (n *Notifier) Store(name string, files ...syscall.Conn) error {
	if n == nil || len(files) == 0 {
		return nil
	}
	if !validFDName(name) {
		return fmt.Errorf("%w: %q", ErrBadFDName, name)
	}
	if len(files) > MaxStoreBatch {
		return fmt.Errorf("systemd: store %q: %d descriptors in one datagram, at most %d", name, len(files), MaxStoreBatch)
	}
	conns := make([]syscall.RawConn, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return fmt.Errorf("systemd: store %q: %w", name, err)
		}
		conns[i] = rc
	}
	// Hold every descriptor (Control) while the datagram is sent.
	var fds []int
	var sendErr error
	var send func(i int) error
	send = func(i int) error {
		if i == len(conns) {
			sendErr = n.s.send(n.addr, []byte("FDSTORE=1\nFDNAME="+name), fds)
			return nil
		}
		var err error
		cerr := conns[i].Control(func(fd uintptr) {
			fds = append(fds, int(fd))
			err = send(i + 1)
		})
		if cerr != nil {
			return cerr
		}
		return err
	}
	if err := send(0); err != nil {
		return fmt.Errorf("systemd: store %q: %w", name, err)
	}
	if sendErr != nil {
		return fmt.Errorf("systemd: store %q on %s: %w", name, n.addr, sendErr)
	}
	return nil
}

// MaxStoreBatch is the most descriptors Store sends in one datagram: the
// kernel's SCM_MAX_FD is 253.
const MaxStoreBatch = 253

// RemoveStored asks the service manager to close and forget every
// descriptor stored under name (FDSTOREREMOVE=1 with FDNAME=name), for
// instance a listener on an address the configuration no longer names.
// Removing a name that is not stored is not an error. A nil Notifier does
// nothing.
func (n *Notifier) RemoveStored(name string) error {
	if n == nil {
		return nil
	}
	if !validFDName(name) {
		return fmt.Errorf("%w: %q", ErrBadFDName, name)
	}
	if err := n.s.send(n.addr, []byte("FDSTOREREMOVE=1\nFDNAME="+name), nil); err != nil {
		return fmt.Errorf("systemd: remove stored %q on %s: %w", name, n.addr, err)
	}
	return nil
}

// validFDName is systemd's fdname_is_valid, less the empty name.
func validFDName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r >= 0x7f || r == ':' })
}
