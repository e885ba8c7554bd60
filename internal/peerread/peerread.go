// Package peerread tells a test when the other end of a loopback TCP
// connection has read everything sent to it: the kernel holds no unread
// byte for the peer's socket (/proc/net/tcp, Linux), so a request written
// is in a handler rather than queued. It replaces a sleep with a
// condition.
package peerread

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Wait polls every 5 ms until the peer of c has read everything c sent,
// and fails after within. c must be an IPv4 TCP connection whose peer is
// in this network namespace.
func Wait(c net.Conn, within time.Duration) error {
	local, remote := procNetAddr(c.RemoteAddr()), procNetAddr(c.LocalAddr())
	if local == "" || remote == "" {
		return errors.New("peerread: not an IPv4 TCP connection")
	}
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			return err
		}
		queued := "no such connection"
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && f[1] == local && f[2] == remote {
				_, rx, _ := strings.Cut(f[4], ":")
				if strings.Trim(rx, "0") == "" {
					return nil
				}
				queued = "rx_queue " + rx
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("peerread: %v has not read what %v sent within %v (%s)", c.RemoteAddr(), c.LocalAddr(), within, queued)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// procNetAddr formats an IPv4 TCP address as /proc/net/tcp does.
func procNetAddr(a net.Addr) string {
	ta, _ := a.(*net.TCPAddr)
	if ta == nil || ta.IP.To4() == nil {
		return ""
	}
	ip := ta.IP.To4()
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ta.Port)
}
