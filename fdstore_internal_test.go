package baton

import (
	"net"
	"testing"
)

func TestSameAddress(t *testing.T) {
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
	for _, tc := range []struct {
		want string
		got  net.Addr
		same bool
	}{
		{"127.0.0.1:8080", tcp, true},
		{"127.0.0.1:9090", tcp, false},
		{"127.0.0.2:8080", tcp, false},
		{":8080", tcp, true},
		{":9090", tcp, false},
		{"localhost:9090", tcp, true}, // a name is not compared
		{"127.0.0.1:0", tcp, true},    // nor port 0
		{"", tcp, true},
		{"[::1]:8080", &net.TCPAddr{IP: net.IPv6loopback, Port: 8080}, true},
		{"/run/webapp/http.sock", &net.UnixAddr{Name: "/run/webapp/http.sock", Net: "unix"}, true},
		{"/run/webapp/new.sock", &net.UnixAddr{Name: "/run/webapp/http.sock", Net: "unix"}, false},
		{"127.0.0.1:8125", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8125}, true},
	} {
		if got := sameAddress(tc.want, tc.got); got != tc.same {
			t.Errorf("sameAddress(%q, %v) = %v, want %v", tc.want, tc.got, got, tc.same)
		}
	}
}
