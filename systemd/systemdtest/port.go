package systemdtest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Ports come from [portMin, portMax): below the kernel's ephemeral range
// (32768 and up), where a client's source port could take a test's port.
const (
	portMin = 20000
	portMax = 32000
)

// ports is the process's port allocator.
var ports struct {
	sync.Mutex
	next   int
	issued map[int]bool
	locks  []io.Closer // held for the life of the process
}

// Port returns a TCP port on 127.0.0.1 between 20000 and 32000 that was
// free when Port bound it, never handed out twice by one process. Test
// processes running at the same time (go test ./... runs packages in
// parallel) get different ports too: on Linux each port is also claimed
// with an abstract unix socket, held until the process exits.
// Port fails the test if no port is left.
func Port(t testing.TB) int {
	t.Helper()
	p, err := nextPort()
	if err != nil {
		t.Fatalf("systemdtest: Port: %v", err)
	}
	return p
}

func nextPort() (int, error) {
	ports.Lock()
	defer ports.Unlock()
	if ports.issued == nil {
		ports.issued = make(map[int]bool)
		ports.next = portMin + rand.IntN(portMax-portMin) // spread processes apart
	}
	for range portMax - portMin {
		p := ports.next
		ports.next++
		if ports.next == portMax {
			ports.next = portMin
		}
		if ports.issued[p] {
			continue
		}
		lock, err := lockPort(p)
		if errors.Is(err, errLocked) {
			continue // another process has it
		}
		// Other errors: go on with the bind check alone.
		if !bindable(p) {
			if lock != nil {
				lock.Close()
			}
			continue
		}
		ports.issued[p] = true
		if lock != nil {
			ports.locks = append(ports.locks, lock)
		}
		return p, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d)", portMin, portMax)
}

// bindable reports whether a TCP listener can be bound to 127.0.0.1:port.
func bindable(port int) bool {
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
