package upgrade

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// waitOpenFDs waits, at most 5 seconds, until this process has at most
// want descriptors open, and returns how many it has.
func waitOpenFDs(t testing.TB, want int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := openFDs(t)
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// warmPoller makes sure the network poller's own descriptors exist
// before a test counts descriptors.
func warmPoller(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

// received is what receiveConns passed on: the conns under their names
// and the messages, in order.
type received struct {
	mu    sync.Mutex
	conns map[string]net.Conn // by remote address
	names map[string]string   // by remote address
	msgs  []int               // descriptors per message
}

func newReceived() *received {
	return &received{conns: map[string]net.Conn{}, names: map[string]string{}}
}

func (r *received) take(name string, c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns[c.RemoteAddr().String()] = c
	r.names[c.RemoteAddr().String()] = name
}

func (r *received) msg(name string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, n)
}

// tcpPairs dials n loopback connections and returns the client ends and
// the accepted ends, in the same order.
func tcpPairs(t *testing.T, n int) (clients, servers []net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range n {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		clients, servers = append(clients, c), append(servers, s)
	}
	return clients, servers
}

// 600 real TCP connections move through a ConnSender, sent concurrently
// from one goroutine each, half of them while a message is being
// written: each arrives under its name as the same TCP connection, in
// messages of at most 253 descriptors, and reads what its client writes
// after the move. Nothing stays open afterwards.
func TestConnsMove(t *testing.T) {
	const n, natural = 600, 300
	warmPoller(t)
	base := openFDs(t)
	clients, servers := tcpPairs(t, n)
	name := func(i int) string {
		if i%8 == 0 {
			return "admin"
		}
		return "http"
	}
	old, neu := connPair(t)
	s := newConnSender(old)
	got := newReceived()
	recvDone := make(chan error, 1)
	go func() { recvDone <- receiveConns(neu, got.take, got.msg) }()

	var wg sync.WaitGroup
	errs := make([]error, n)
	send := func(i int) {
		defer wg.Done()
		if errs[i] = s.Send(name(i), servers[i].(*net.TCPConn)); errs[i] == nil {
			servers[i].Close()
		}
	}
	// As they come.
	for i := range natural {
		wg.Add(1)
		go send(i)
	}
	wg.Wait()
	// While a message is being written (the sender says so): the rest
	// queue up, and go together once it is done.
	s.mu.Lock()
	s.writing = true
	s.mu.Unlock()
	for i := natural; i < n; i++ {
		wg.Add(1)
		go send(i)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s.mu.Lock()
		queued := len(s.queue)
		s.mu.Unlock()
		if queued == n-natural {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d Sends queued within 10 s", queued, n-natural)
		}
	}
	s.mu.Lock()
	first := s.queue[0]
	s.mu.Unlock()
	first.done <- errLead
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Send(%s, conn %d) = %v", name(i), i, err)
		}
	}
	if got := s.Sent(); got != n {
		t.Errorf("Sent() = %d, want %d", got, n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	if err := s.Send("http", clients[0].(*net.TCPConn)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v, want net.ErrClosed", err)
	}
	select {
	case err := <-recvDone:
		if err != nil {
			t.Fatalf("receiveConns = %v, want nil at the end of the stream", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("receiveConns did not return within 10 s of Close")
	}
	neu.Close()

	if len(got.conns) != n {
		t.Errorf("received %d connections, want %d", len(got.conns), n)
	}
	total, biggest := 0, 0
	for _, k := range got.msgs {
		total += k
		biggest = max(biggest, k)
	}
	if total != n || biggest > maxConnsPerMessage {
		t.Errorf("messages carried %v descriptors, want %d in all and at most %d each", got.msgs, n, maxConnsPerMessage)
	}
	// The queued "http" Sends (262 of the last 300) needed two messages.
	if biggest != maxConnsPerMessage {
		t.Errorf("largest message carried %d descriptors, want %d: the queued Sends were not passed together", biggest, maxConnsPerMessage)
	}
	for i, c := range clients {
		addr := c.LocalAddr().String()
		rc, ok := got.conns[addr]
		if !ok {
			t.Errorf("client %d (%s): no received connection has it as its remote address", i, addr)
			continue
		}
		if got.names[addr] != name(i) {
			t.Errorf("client %d received under %q, want %q", i, got.names[addr], name(i))
		}
		fmt.Fprintf(c, "after the move %d\n", i)
		rc.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(rc).ReadString('\n')
		if want := fmt.Sprintf("after the move %d\n", i); line != want || err != nil {
			t.Errorf("received conn of client %d read %q, %v; want %q", i, line, err, want)
		}
	}
	for _, c := range clients {
		c.Close()
	}
	for _, c := range got.conns {
		c.Close()
	}
	if now := waitOpenFDs(t, base); now > base { // fewer: another test's descriptor closed meanwhile
		t.Errorf("%d descriptors open after the move, want the %d before it", now, base)
	}
}

// When the new generation goes away, Send says so (EPIPE) instead of
// waiting, and every later Send fails at once with the same error. A bad
// name or a descriptor that is not a socket fail that Send only.
func TestConnSenderPeerGone(t *testing.T) {
	warmPoller(t)
	base := openFDs(t)
	clients, servers := tcpPairs(t, 2)
	old, neu := connPair(t)
	s := newConnSender(old)
	if err := s.Send("bad name", servers[0].(*net.TCPConn)); err == nil || !strings.Contains(err.Error(), "socket name") {
		t.Errorf("Send(%q) = %v, want an error for the name", "bad name", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send("http", pr); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Send(a pipe) = %v, want not a socket", err)
	}
	pr.Close()
	pw.Close()
	neu.Close()
	err = s.Send("http", servers[0].(*net.TCPConn))
	if !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("Send after the receiver closed = %v, want EPIPE", err)
	}
	if again := s.Send("http", servers[1].(*net.TCPConn)); again == nil || again.Error() != err.Error() {
		t.Errorf("second Send = %v, want the first error %v", again, err)
	}
	if n := s.Sent(); n != 0 {
		t.Errorf("Sent() = %d, want 0", n)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
	for _, c := range append(clients, servers...) {
		c.Close()
	}
	if now := waitOpenFDs(t, base); now > base { // fewer: another test's descriptor closed meanwhile
		t.Errorf("%d descriptors open afterwards, want the %d before", now, base)
	}
}

// A new generation that takes nothing fails the Send that waits for room
// in the channel, after the sender's timeout, and the Sends queued behind
// it with it.
func TestConnSenderPeerHangs(t *testing.T) {
	warmPoller(t)
	base := openFDs(t)
	clients, servers := tcpPairs(t, 1)
	old, neu := connPair(t)
	sc, _ := old.SyscallConn()
	sc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 1) })
	s := newConnSender(old)
	s.timeout = 200 * time.Millisecond
	var err error
	sent := 0
	for start := time.Now(); sent < 10000 && time.Since(start) < 10*time.Second; sent++ {
		if err = s.Send("http", servers[0].(*net.TCPConn)); err != nil {
			break
		}
	}
	if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "took nothing within 200ms") {
		t.Fatalf("Send to a receiver that reads nothing, after %d: %v; want took nothing within 200ms", sent, err)
	}
	if n := s.Sent(); n != sent {
		t.Errorf("Sent() = %d, want the %d that went", n, sent)
	}
	s.Close()
	neu.Close() // the kernel closes what was in flight
	for _, c := range append(clients, servers...) {
		c.Close()
	}
	if now := waitOpenFDs(t, base); now > base { // fewer: another test's descriptor closed meanwhile
		t.Errorf("%d descriptors open afterwards, want the %d before", now, base)
	}
}

// socketFDs returns n close-on-exec descriptors of one socket, for
// passing; the caller closes them.
func socketFDs(t testing.TB, n int) []int {
	t.Helper()
	if n == 0 {
		return nil
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(pair[1])
	fds := []int{pair[0]}
	for len(fds) < n {
		d, err := unix.FcntlInt(uintptr(pair[0]), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			closeFDs(fds)
			t.Fatal(err)
		}
		fds = append(fds, d)
	}
	return fds
}

// feed writes each message, with its number of descriptors (the first a
// pipe's if pipe is set), on one end of a fresh pair, closes it, and runs
// receiveConns on the other: the names it passed on (it closes their
// conns), and its error.
func feed(t testing.TB, msgs []string, nfds []int, pipe bool) ([]string, error) {
	t.Helper()
	old, neu := connPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer old.Close()
		for i, m := range msgs {
			fds := socketFDs(t, nfds[i])
			if pipe && len(fds) > 0 {
				var p [2]int
				if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
					t.Error(err)
					return
				}
				unix.Close(p[1])
				unix.Close(fds[0])
				fds[0] = p[0]
			}
			err := writeMsg(old, []byte(m), fds)
			closeFDs(fds) // the receiver has its own now
			if err != nil {
				return // the receiver gave up
			}
		}
	}()
	var names []string
	var mu sync.Mutex
	err := receiveConns(neu, func(name string, c net.Conn) {
		mu.Lock()
		names = append(names, name)
		mu.Unlock()
		c.Close()
	}, nil)
	neu.Close()
	<-done
	// Messages are passed on concurrently: their order is not kept.
	slices.Sort(names)
	return names, err
}

// A malformed stream ends ReceiveConns with an error, and every
// descriptor it got is closed: what it passed on (closed here) and what
// it did not.
func TestReceiveConnsMalformed(t *testing.T) {
	tests := []struct {
		name  string
		msgs  []string
		nfds  []int
		pipe  bool
		calls []string
		want  string // "" for success
	}{
		{"one", []string{"conns http 1\n"}, []int{1}, false, []string{"http"}, ""},
		{"several messages", []string{"conns http 2\n", "conns admin 1\n", "conns http 1\n"}, []int{2, 1, 1}, false, []string{"admin", "http", "http", "http"}, ""},
		{"two headers, one message", []string{"conns http 2\nconns admin 1\n"}, []int{3}, false, []string{"admin", "http", "http"}, ""},
		{"split header", []string{"conns ht", "tp 1\n"}, []int{1, 0}, false, []string{"http"}, ""},
		{"nothing", nil, nil, false, nil, ""},
		{"name with a space", []string{"conns bad name 1\n"}, []int{1}, false, nil, "want 1 to 253 descriptors"},
		{"name with a colon", []string{"conns a:b 1\n"}, []int{1}, false, nil, "without ':' or space"},
		{"empty name", []string{"conns  1\n"}, []int{1}, false, nil, "want 1 to 255 characters"},
		{"long name", []string{"conns " + strings.Repeat("n", 256) + " 1\n"}, []int{1}, false, nil, "want 1 to 255 characters"},
		{"more promised than came", []string{"conns http 2\n"}, []int{1}, false, nil, "1 descriptor came"},
		{"promised, none came", []string{"conns http 1\n"}, []int{0}, false, nil, "no descriptors came"},
		{"more came than claimed", []string{"conns http 1\n"}, []int{2}, false, []string{"http"}, "1 descriptor no header claimed"},
		{"no header", []string{"x"}, []int{1}, false, nil, "ends within a header"},
		{"garbage", []string{"\x00\xffgarbage\n"}, []int{3}, false, nil, "want \"conns <name> <n>\""},
		{"ack as a header", []string{"conns\n"}, []int{1}, false, nil, "want \"conns <name> <n>\""},
		{"zero", []string{"conns http 0\n"}, []int{1}, false, nil, "want 1 to 253 descriptors"},
		{"too many", []string{"conns http 254\n"}, []int{1}, false, nil, "want 1 to 253 descriptors"},
		{"leading zero", []string{"conns http 01\n"}, []int{1}, false, nil, "want 1 to 253 descriptors"},
		{"unfinished", []string{"conns http 1"}, []int{1}, false, nil, "ends within a header"},
		{"endless line", []string{strings.Repeat("c", 5000)}, []int{1}, false, nil, "without a newline"},
		{"good then bad", []string{"conns http 1\n", "conns http 2\n"}, []int{1, 1}, false, []string{"http"}, "1 descriptor came"},
		{"not a socket", []string{"conns http 2\n"}, []int{2}, true, nil, "descriptor for http"},
	}
	warmPoller(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := openFDs(t)
			calls, err := feed(t, tt.msgs, tt.nfds, tt.pipe)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("receiveConns(%q) = %v, want nil", tt.msgs, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("receiveConns(%q) = %v, want an error with %q", tt.msgs, err, tt.want)
			}
			if strings.Join(calls, ",") != strings.Join(tt.calls, ",") {
				t.Errorf("receiveConns(%q) passed on %q, want %q", tt.msgs, calls, tt.calls)
			}
			if now := waitOpenFDs(t, base); now > base { // fewer: another test's descriptor closed meanwhile
				t.Errorf("%d descriptors open afterwards, want the %d before", now, base)
			}
		})
	}
}

func TestTakeConnsWithoutChannel(t *testing.T) {
	var nilh *Handoff
	if err := nilh.TakeConns(); !errors.Is(err, ErrNoConns) {
		t.Errorf("(*Handoff)(nil).TakeConns() = %v, want ErrNoConns", err)
	}
	if err := nilh.ReceiveConns(func(string, net.Conn) { t.Error("called") }); err != nil {
		t.Errorf("(*Handoff)(nil).ReceiveConns() = %v, want nil", err)
	}
	// An older parent passes a handshake and no conns channel.
	h, old := handshakePair(t)
	defer old.Close()
	defer h.conn.Close()
	if err := h.TakeConns(); !errors.Is(err, ErrNoConns) || !strings.Contains(err.Error(), "older version") {
		t.Errorf("TakeConns() without a conns channel = %v, want ErrNoConns", err)
	}
	if err := h.ReceiveConns(func(string, net.Conn) { t.Error("called") }); err != nil {
		t.Errorf("ReceiveConns() without a conns channel = %v, want nil", err)
	}
}

// TakeConns writes its acknowledgement once, only before Accepting; the
// old generation sees it without waiting.
func TestTakeConnsAck(t *testing.T) {
	old, neu := connPair(t)
	defer old.Close()
	h := &Handoff{conns: neu}
	if ok, err := connsAcked(old); ok || err != nil {
		t.Errorf("connsAcked before TakeConns = %v, %v; want false", ok, err)
	}
	for i := range 2 {
		if err := h.TakeConns(); err != nil {
			t.Fatalf("TakeConns() call %d = %v", i+1, err)
		}
	}
	if ok, err := connsAcked(old); !ok || err != nil {
		t.Errorf("connsAcked after TakeConns = %v, %v; want true", ok, err)
	}
	if ok, err := connsAcked(old); ok || err != nil {
		t.Errorf("connsAcked after one acknowledgement = %v, %v; want false (written once)", ok, err)
	}
	h.accepted = true
	h.connsTaken = false
	if err := h.TakeConns(); err == nil {
		t.Error("TakeConns() after Accepting = nil, want an error")
	}
	old.Write([]byte("nonsense"))
	if ok, err := connsAcked(neu); ok || err == nil {
		t.Errorf("connsAcked of %q = %v, %v; want an error", "nonsense", ok, err)
	}
	neu.Close()
}

// FuzzReceiveConns reads any bytes on the conns channel, carrying up to
// 253 descriptors with the first: ReceiveConns returns nil exactly when
// they are a sequence of well-formed headers that claim all the
// descriptors, passes on one connection for each claimed descriptor under
// its header's name, and leaves no descriptor open either way.
func FuzzReceiveConns(f *testing.F) {
	for _, s := range []struct {
		data string
		n    uint8
	}{
		{"conns http 1\n", 1}, {"conns http 2\nconns admin 1\n", 3}, {"conns http 1\n", 0}, {"conns http 1\n", 2},
		{"conns http 253\n", 253}, {"conns http 254\n", 253}, {"conns http 0\n", 0}, {"conns  1\n", 1},
		{"conns a b 1\n", 1}, {"conns http 1", 1}, {"conns\n", 0}, {"", 0}, {"\n", 1}, {"conns http 01\n", 1},
		{"conns http 1\r\n", 1}, {"conns " + strings.Repeat("n", 255) + " 1\n", 1}, {"conns " + strings.Repeat("n", 256) + " 1\n", 1},
		{strings.Repeat("x", 5000), 1},
	} {
		f.Add([]byte(s.data), s.n)
	}
	warmPoller(f)
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		nfds := int(n) % (maxConnsPerMessage + 1)
		if len(data) == 0 {
			nfds = 0 // a stream socket passes descriptors only with data
		}
		base := openFDs(t)
		calls, err := feed(t, []string{string(data)}, []int{nfds}, false)
		want, ok := expectConns(data, nfds)
		slices.Sort(want) // feed sorts what was passed on
		if ok != (err == nil) {
			t.Errorf("receiveConns(%q with %d descriptors) = %v, want success %v", data, nfds, err, ok)
		}
		if ok && strings.Join(calls, "/") != strings.Join(want, "/") {
			t.Errorf("receiveConns(%q with %d descriptors) passed on %q, want %q", data, nfds, calls, want)
		}
		if !ok && len(calls) > nfds {
			t.Errorf("receiveConns(%q with %d descriptors) passed on %d connections", data, nfds, len(calls))
		}
		if now := openFDs(t); now > base {
			t.Errorf("%d descriptors open after receiveConns, want the %d before", now, base)
		}
	})
}

// expectConns is what receiveConns should pass on for data with n
// descriptors: the names, one for each, and whether the stream is good.
func expectConns(data []byte, n int) ([]string, bool) {
	s := string(data)
	if s == "" {
		return nil, n == 0
	}
	if !strings.HasSuffix(s, "\n") {
		return nil, false
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		f := strings.Split(line, " ")
		if len(f) != 3 || f[0] != "conns" || len(f[1]) < 1 || len(f[1]) > 255 || strings.ContainsFunc(f[1], func(r rune) bool { return r <= ' ' || r > '~' || r == ':' }) {
			return nil, false
		}
		var k int
		if _, err := fmt.Sscanf(f[2], "%d", &k); err != nil || fmt.Sprint(k) != f[2] || k < 1 || k > 253 {
			return nil, false
		}
		for range k {
			names = append(names, f[1])
		}
	}
	return names, len(names) == n
}

func TestInheritedConnsFD(t *testing.T) {
	const hs, ctl = 9, 10
	tests := []struct {
		v            string
		first, files int
		want         int
		wantErr      string
	}{
		{"", -1, 0, -1, ""},
		{"11", -1, 0, 11, ""},
		{"11", 4, 2, 11, ""},
		{"3", -1, 0, 3, ""},
		{"2", -1, 0, -1, "want a descriptor number of at least 3"},
		{"011", -1, 0, -1, "want a descriptor number of at least 3"},
		{"x", -1, 0, -1, "want a descriptor number of at least 3"},
		{"9", -1, 0, -1, "the descriptor of BATON_UPGRADE_FD too"},
		{"10", -1, 0, -1, "the descriptor of BATON_CONTROL_FD too"},
		{"12", 11, 2, -1, "the descriptor of a file of BATON_FILES too"},
		{"13", 11, 2, 13, ""},
	}
	for _, tt := range tests {
		lookup := func(k string) (string, bool) {
			if k == envConnsFD {
				return tt.v, true
			}
			return "", false
		}
		fd, err := inheritedConnsFD(lookup, hs, ctl, tt.first, tt.files)
		switch {
		case tt.wantErr == "" && (err != nil || fd != tt.want):
			t.Errorf("inheritedConnsFD(%q, files %d+%d) = %d, %v; want %d", tt.v, tt.first, tt.files, fd, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || fd != -1):
			t.Errorf("inheritedConnsFD(%q, files %d+%d) = %d, %v; want an error with %q", tt.v, tt.first, tt.files, fd, err, tt.wantErr)
		}
	}
}
