package drain

import (
	"net"
	"net/http"
	"syscall"

	"golang.org/x/sys/unix"
)

// underWay reports whether a server connection that net/http calls new or
// idle has work under way, from the kernel's view of its socket: an
// answer waiting in the send queue that the client does not take, or, on
// a new connection, a first request begun (a byte received). When the
// kernel cannot say, a new connection counts as under way and an idle one
// does not.
func underWay(c net.Conn, st http.ConnState) bool {
	if nc, ok := c.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		c = nc.NetConn()
	}
	unknown := st == http.StateNew
	// A connection handed over from a previous generation has received
	// bytes there: only what is still unread here tells of a request.
	hc, adopted := c.(*hconn)
	adopted = adopted && hc.adopted
	sc, ok := c.(syscall.Conn)
	if !ok {
		return unknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return unknown
	}
	busy := unknown
	// A descriptor already closed (net/http closed the connection, and
	// its ConnState has not come yet) has nothing under way here.
	if err := rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			// Not sent at all: the client's window is closed.
			busy = info.Notsent_bytes > 0 || st == http.StateNew && info.Bytes_received > 0
			if adopted {
				n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
				busy = info.Notsent_bytes > 0 || st == http.StateNew && err == nil && n > 0
			}
			return
		}
		// Not TCP (a unix socket): anything in the send queue.
		if n, err := unix.IoctlGetInt(int(fd), unix.SIOCOUTQ); err == nil && n > 0 {
			busy = true
		}
	}); err != nil {
		return false
	}
	return busy
}
