package baton

import (
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/baton-dev/baton/drain"
)

// TestDatagramPauseResume drives the datagram kind on two real UDP
// sockets while numbered datagrams arrive in bursts, and pauses it in the
// middle of each burst, as a hand-over does: after pause returns no
// handler runs until resume; every datagram is handled exactly once in
// the end; stopAccepting ends the loops, paused or not. This is what
// makes only one generation read at a time.
func TestDatagramPauseResume(t *testing.T) {
	for _, c := range []struct {
		name            string
		stopWhilePaused bool
	}{{"stop while reading", false}, {"stop while paused", true}} {
		t.Run(c.name, func(t *testing.T) {
			const total, burst = 2000, 50
			var pcs []net.PacketConn
			var senders []net.Conn
			for range 2 {
				pc, err := net.ListenPacket("udp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				// Room for what waits while paused, so the kernel drops
				// nothing.
				pc.(*net.UDPConn).SetReadBuffer(4 << 20)
				s, err := net.Dial("udp", pc.LocalAddr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				pcs, senders = append(pcs, pc), append(senders, s)
			}

			var (
				mu          sync.Mutex
				seen        [total]int
				handled     int
				paused      atomic.Bool // between pause returning and resume
				whilePaused atomic.Int64
			)
			k := &datagramKind{h: func(_ net.PacketConn, b []byte, _ net.Addr) {
				if paused.Load() {
					whilePaused.Add(1)
				}
				seq, err := strconv.Atoi(string(b))
				if err != nil || seq < 0 || seq >= total {
					t.Errorf("datagram %q", b)
					return
				}
				if seq%97 == 0 {
					time.Sleep(time.Millisecond) // a pause meets a handler under way
				}
				mu.Lock()
				seen[seq]++
				handled++
				mu.Unlock()
			}}
			k.setup(drain.Options{})
			served := make(chan error, len(pcs))
			for _, pc := range pcs {
				go func() { served <- k.serve(pc) }()
			}
			count := func() int {
				mu.Lock()
				defer mu.Unlock()
				return handled
			}
			waitHandled := func(n int) {
				t.Helper()
				for deadline := time.Now().Add(10 * time.Second); count() < n; time.Sleep(time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("%d of %d datagrams handled after 10 s", count(), n)
					}
				}
			}
			seq := 0
			send := func(n int) {
				for i := 0; i < n && seq < total; i++ {
					if _, err := senders[seq%2].Write([]byte(strconv.Itoa(seq))); err != nil {
						t.Fatal(err)
					}
					seq++
				}
			}

			cycles := 0
			for seq < total {
				cycles++
				// A burst, paused while it is being read.
				send(burst)
				k.pause()
				paused.Store(true)
				before := count()
				// Another burst while paused: it waits in the queues. A
				// moment for a wrongly running loop to take some.
				send(burst)
				time.Sleep(2 * time.Millisecond)
				if after := count(); after != before {
					t.Fatalf("cycle %d: %d datagrams handled after pause returned", cycles, after-before)
				}
				if c.stopWhilePaused && seq == total {
					break
				}
				paused.Store(false)
				k.resume()
				waitHandled(seq)
			}
			k.stopAccepting()
			for range pcs {
				select {
				case err := <-served:
					if err != nil {
						t.Errorf("serve() = %v after stopAccepting, want nil", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a datagram loop still runs 10 s after stopAccepting")
				}
			}
			if n := whilePaused.Load(); n != 0 {
				t.Errorf("the handler ran %d times while paused", n)
			}
			// What the stopped loops did not read is still queued, for
			// the next generation.
			queued := 0
			b := make([]byte, 64)
			for _, pc := range pcs {
				for {
					pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
					n, _, err := pc.ReadFrom(b)
					if err != nil {
						break
					}
					seq, _ := strconv.Atoi(string(b[:n]))
					seen[seq]++
					queued++
				}
			}
			mu.Lock()
			defer mu.Unlock()
			dup, lost := 0, 0
			for _, n := range seen {
				switch {
				case n > 1:
					dup++
				case n == 0:
					lost++
				}
			}
			t.Logf("%d datagrams, %d pauses: %d handled, %d left queued", total, cycles, handled, queued)
			if dup != 0 || lost != 0 {
				t.Errorf("%d datagrams in %d pauses: %d handled, %d left queued, %d twice, %d never, want each once", total, cycles, handled, queued, dup, lost)
			}
			if !c.stopWhilePaused && queued != 0 {
				t.Errorf("%d datagrams left unread after resume", queued)
			}
			if c.stopWhilePaused && queued == 0 {
				t.Error("nothing left queued by a stop while paused: the paused loops read on")
			}
		})
	}
}
