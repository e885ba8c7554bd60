package baton

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/drain"
)

// Socket names the socket a Server serves: Name is the FileDescriptorName=
// of its .socket unit, Network and Address the fallback bound when systemd
// passes nothing, Optional a socket the service can do without, Multiple
// several descriptors under one name. See activation.Spec.
type Socket = activation.Spec

// Server is one server on one named socket, made by HTTP, GRPC, Stream,
// Datagram or Hold. Run activates, hands over and drains the servers it is
// given together.
type Server struct {
	sock Socket
	kind kind
	err  error // a constructor's complaint, reported by Run
}

// Socket returns the socket the server serves.
func (s *Server) Socket() Socket { return s.sock }

// kind is one protocol's behaviour: how it serves its sockets, how it
// stops taking new work, how it drains and how it is cut. Run composes
// kinds and knows nothing of the protocols.
type kind interface {
	// datagram says whether the kind serves datagram sockets.
	datagram() bool
	// check says what is wrong with the server before anything is bound.
	check() error
	// setup readies the kind to serve, with the drain's options.
	setup(opts drain.Options)
	// serve serves one socket (a net.Listener, or a net.PacketConn for a
	// datagram kind) until stopAccepting or a fatal error; it returns nil
	// when stopped.
	serve(sock any) error
	// pause stops what only one generation may do at a time (reading a
	// datagram socket) just before a new generation is told to start,
	// and returns when it has stopped; resume undoes it when the
	// hand-over failed.
	pause()
	resume()
	// stopAccepting stops taking new connections or datagrams; what is
	// under way goes on.
	stopAccepting()
	// release returns, after stopAccepting, once nothing under way uses
	// the served socket itself any more (a datagram handler answers on
	// the socket it read from), or when ctx ends: then Run closes it.
	release(ctx context.Context)
	// drain finishes what is under way until ctx ends, then cuts what is
	// left and counts it.
	drain(ctx context.Context) (drain.Report, error)
	// connections is how many connections are open, and longLived how
	// many of them are long-lived: hijacked (WebSockets), raw, gRPC.
	connections() int
	longLived() int
}

// HTTP serves srv (HTTP/1.1, and HTTP/2 as srv.Protocols allows: set
// UnencryptedHTTP2 there for h2c) on the socket. With srv.TLSConfig set it
// serves TLS, offering "h2" and "http/1.1" by ALPN; the config must hold
// the certificates (Certificates, GetCertificate or GetConfigForClient),
// and Run refuses to start when one of Certificates does not match its
// private key.
//
// While draining, responses carry "Connection: close" (on HTTP/2 a GOAWAY,
// after which the connection's open streams finish), kept-alive
// connections are answered for the idle grace, and what is still open at
// the deadline is cut (see package drain). srv.Handler and srv.ConnState
// are wrapped by Run: do not change them afterwards.
func HTTP(sock Socket, srv *http.Server) *Server {
	s := &Server{sock: sock}
	if srv == nil {
		s.err = errors.New("HTTP: nil *http.Server")
		srv = &http.Server{}
	}
	// Decided now: net/http's Serve sets a TLSConfig of its own.
	s.kind = &httpKind{srv: srv, tls: srv.TLSConfig != nil}
	return s
}

// GRPCServer is what GRPC needs of a gRPC server; *grpc.Server has these
// methods, so that baton itself imports no gRPC.
type GRPCServer interface {
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// GRPC serves a gRPC server on the socket. When the drain begins it calls
// GracefulStop (GOAWAY: clients retry new calls elsewhere, calls under way
// finish); at the deadline it calls Stop, and the connections still open
// are counted as cut. A streaming handler that would outlive the drain
// should end its stream when Options.OnDrain says so, with a status the
// client retries (codes.Unavailable).
func GRPC(sock Socket, srv GRPCServer) *Server {
	s := &Server{sock: sock, kind: &grpcKind{srv: srv}}
	if srv == nil {
		s.err = errors.New("GRPC: nil server")
	}
	return s
}

// StreamHandler serves one connection of a raw stream socket. ctx ends
// when the drain begins (Draining(ctx) is closed then too): finish the
// exchange under way, tell the peer to go if the protocol can, and
// return. The connection is closed when the handler returns; one still
// open at the deadline is closed and counted as cut.
type StreamHandler func(ctx context.Context, c net.Conn)

// Stream serves a raw stream socket (TCP or unix): every connection goes to
// h in its own goroutine. At the deadline the connections still open are
// closed and counted as cut.
func Stream(sock Socket, h StreamHandler) *Server {
	s := &Server{sock: sock, kind: &streamKind{h: h}}
	if h == nil {
		s.err = errors.New("Stream: nil handler")
	}
	return s
}

// DatagramHandler handles one datagram read from pc; it may answer with
// pc.WriteTo(reply, from). b is reused after it returns.
type DatagramHandler func(pc net.PacketConn, b []byte, from net.Addr)

// Datagram serves a datagram socket (ListenDatagram=, a Socket with
// Network "udp" or "unixgram"): one reader calls h for each datagram, in
// order. Only one generation reads at a time: during a hand-over the old
// one stops reading just before the new one is told to start, so a
// datagram is handled by exactly one of them, and those that arrive
// between wait in the socket's queue.
func Datagram(sock Socket, h DatagramHandler) *Server {
	if sock.Network == "" {
		sock.Network = "udp"
	}
	s := &Server{sock: sock, kind: &datagramKind{h: h}}
	if h == nil {
		s.err = errors.New("Datagram: nil handler")
	}
	return s
}

// Hold takes the socket without serving it, so that a socket the unit
// passes but the service cannot use now (a TLS socket without its
// certificate, say) is neither an error nor lost: it is handed on to the
// next generation as it is. why is logged once.
func Hold(sock Socket, why string) *Server {
	return &Server{sock: sock, kind: &holdKind{why: why, dgram: sock.Datagram()}}
}

// Defer makes the socket's server only if the socket is there: Run calls
// build after taking the sockets, before anything is accepted, and only
// when the unit passed the socket (or, without systemd, its fallback was
// bound). Use it for what only that server needs, such as reading a TLS
// certificate, so that a service whose unit does not pass the socket
// neither reads nor checks it. build returns the server for sock (made by
// HTTP, GRPC, Stream, Datagram or Hold, on a Socket of the same name), or
// an error that stops the start.
func Defer(sock Socket, build func() (*Server, error)) *Server {
	s := &Server{sock: sock, kind: &deferKind{build: build, dgram: sock.Datagram()}}
	if build == nil {
		s.err = errors.New("Defer: nil build function")
	}
	return s
}

// deferKind stands for a server that Run builds once its socket is
// there; it never serves itself.
type deferKind struct {
	holdKind
	build func() (*Server, error)
	dgram bool
}

func (k *deferKind) datagram() bool { return k.dgram }

// built returns the server build makes for s, checked like those given to
// Run.
func (k *deferKind) built(s *Server) (*Server, error) {
	b, err := k.build()
	if err != nil {
		return nil, fmt.Errorf("baton: socket %q: %w", s.sock.Name, err)
	}
	if b == nil || b.kind == nil {
		return nil, fmt.Errorf("baton: socket %q: Defer's build returned no server", s.sock.Name)
	}
	if _, ok := b.kind.(*deferKind); ok {
		return nil, fmt.Errorf("baton: socket %q: Defer's build returned another Defer", s.sock.Name)
	}
	if b.sock.Name != s.sock.Name {
		return nil, fmt.Errorf("baton: socket %q: Defer's build returned a server for socket %q", s.sock.Name, b.sock.Name)
	}
	if err := checkServers([]*Server{b}); err != nil {
		return nil, err
	}
	return b, nil
}

// httpKind serves a *http.Server, plaintext or TLS.
type httpKind struct {
	srv *http.Server
	tls bool
	d   *drain.Drainer
}

func (k *httpKind) datagram() bool { return false }

func (k *httpKind) check() error {
	if !k.tls {
		return nil
	}
	c := k.srv.TLSConfig
	if len(c.Certificates) == 0 && c.GetCertificate == nil && c.GetConfigForClient == nil {
		return errors.New("TLSConfig has no certificate (Certificates, GetCertificate or GetConfigForClient)")
	}
	var errs []error
	for i, cert := range c.Certificates {
		if err := checkKeyPair(cert); err != nil {
			errs = append(errs, fmt.Errorf("TLSConfig certificate %d: %w", i, err))
		}
	}
	return errors.Join(errs...)
}

// checkKeyPair says what tls.X509KeyPair would say of a certificate put
// together by hand: a certificate whose public key is not that of its
// private key fails every handshake.
func checkKeyPair(c tls.Certificate) error {
	if len(c.Certificate) == 0 {
		return errors.New("no certificate data")
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return err
		}
	}
	key, ok := c.PrivateKey.(interface{ Public() crypto.PublicKey })
	if !ok {
		return fmt.Errorf("private key %T has no public key", c.PrivateKey)
	}
	// The standard library's keys compare; another kind is left to the
	// handshake.
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); ok && !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("%q does not match its private key", leaf.Subject.String())
	}
	return nil
}

func (k *httpKind) setup(o drain.Options) { k.d = drain.New(o) }

func (k *httpKind) serve(sock any) error {
	ln := sock.(net.Listener)
	var err error
	if _, probe := ln.(*probe); probe {
		err = k.d.ServeProbe(k.srv, ln) // plaintext, and not a client's
	} else if k.tls {
		err = k.d.ServeTLS(k.srv, ln)
	} else {
		err = k.d.Serve(k.srv, ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (k *httpKind) pause()                  {}
func (k *httpKind) resume()                 {}
func (k *httpKind) stopAccepting()          { k.d.StopAccepting() }
func (k *httpKind) release(context.Context) {}
func (k *httpKind) connections() int        { return k.d.Connections() }
func (k *httpKind) longLived() int          { return k.d.Raw() }
func (k *httpKind) inFlight() int           { return k.d.InFlight() }

func (k *httpKind) drain(ctx context.Context) (drain.Report, error) { return k.d.Shutdown(ctx) }

// connMover is a kind whose connections can go on to the next
// generation at a reload instead of being closed.
type connMover interface {
	// canMove reports whether any of the kind's connections can go.
	canMove() bool
	// handOver arms the hand-over with move, which passes a connection
	// on.
	handOver(move func(net.Conn) error)
	// adopt serves a connection the previous generation passed on.
	adopt(c net.Conn) error
	// moved is how many connections went.
	moved() int
	// handedOver is closed once the drain has no connection left to
	// pass on but those the previous generation still passes.
	handedOver() <-chan struct{}
}

// handOver: plaintext HTTP/1.1 connections go; over TLS their state
// lives in this process.
func (k *httpKind) canMove() bool { return !k.tls }

func (k *httpKind) handOver(move func(net.Conn) error) {
	if !k.tls {
		k.d.HandOver(move)
	}
}

func (k *httpKind) adopt(c net.Conn) error { return k.d.Adopt(k.srv, c) }
func (k *httpKind) moved() int             { return k.d.Moved() }

func (k *httpKind) handedOver() <-chan struct{} { return k.d.HandedOver() }

// grpcKind serves a GRPCServer. Its connections are tracked by a Drainer
// as raw connections; the drain's start calls GracefulStop.
type grpcKind struct {
	srv GRPCServer
	d   *drain.Drainer
}

func (k *grpcKind) datagram() bool { return false }
func (k *grpcKind) check() error   { return nil }

func (k *grpcKind) setup(o drain.Options) {
	k.d = drain.New(o)
	k.d.OnDrain(k.srv.GracefulStop)
}

func (k *grpcKind) serve(sock any) error {
	err := k.srv.Serve(k.d.Listen(sock.(net.Listener)))
	if k.d.Draining() {
		return nil
	}
	return err
}

func (k *grpcKind) pause()                  {}
func (k *grpcKind) resume()                 {}
func (k *grpcKind) stopAccepting()          { k.d.StopAccepting() }
func (k *grpcKind) release(context.Context) {}
func (k *grpcKind) connections() int        { return k.d.Connections() }
func (k *grpcKind) longLived() int          { return k.d.Connections() }
func (k *grpcKind) inFlight() int           { return k.d.InFlight() }

func (k *grpcKind) drain(ctx context.Context) (drain.Report, error) {
	rep, err := k.d.Shutdown(ctx)
	k.srv.Stop() // returns at once when GracefulStop is done
	return rep, err
}

// streamKind hands every connection to a StreamHandler.
type streamKind struct {
	h   StreamHandler
	d   *drain.Drainer
	ctx context.Context // ends when the drain begins
}

func (k *streamKind) datagram() bool { return false }
func (k *streamKind) check() error   { return nil }

func (k *streamKind) setup(o drain.Options) {
	k.d = drain.New(o)
	k.ctx = k.d.NewContext(context.Background())
}

func (k *streamKind) serve(sock any) error {
	ln := k.d.Listen(sock.(net.Listener))
	for {
		c, err := ln.Accept()
		if err != nil {
			if k.d.Draining() {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			k.h(k.ctx, c)
		}()
	}
}

func (k *streamKind) pause()                  {}
func (k *streamKind) resume()                 {}
func (k *streamKind) stopAccepting()          { k.d.StopAccepting() }
func (k *streamKind) release(context.Context) {}
func (k *streamKind) connections() int        { return k.d.Connections() }
func (k *streamKind) longLived() int          { return k.d.Connections() }
func (k *streamKind) inFlight() int           { return k.d.InFlight() }

func (k *streamKind) drain(ctx context.Context) (drain.Report, error) { return k.d.Shutdown(ctx) }

// datagramKind reads a datagram socket in one loop per socket.
type datagramKind struct {
	h DatagramHandler

	mu      sync.Mutex
	cond    *sync.Cond
	paused  bool
	stopped bool
	reading int              // loops inside ReadFrom or the handler
	pcs     []net.PacketConn // being served
	loops   sync.WaitGroup
}

func (k *datagramKind) datagram() bool { return true }
func (k *datagramKind) check() error   { return nil }

func (k *datagramKind) setup(drain.Options) { k.cond = sync.NewCond(&k.mu) }

// past is a read deadline that makes a blocked ReadFrom return at once.
var past = time.Unix(1, 0)

func (k *datagramKind) serve(sock any) error {
	pc := sock.(net.PacketConn)
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return nil
	}
	k.pcs = append(k.pcs, pc)
	k.loops.Add(1)
	k.mu.Unlock()
	defer k.loops.Done()
	buf := make([]byte, 64<<10)
	delay := 5 * time.Millisecond
	for {
		k.mu.Lock()
		for k.paused && !k.stopped {
			k.cond.Wait()
		}
		if k.stopped {
			k.mu.Unlock()
			return nil
		}
		k.reading++
		k.mu.Unlock()

		n, from, err := pc.ReadFrom(buf)
		if n > 0 || err == nil {
			// Read, so ours to answer, whatever came meanwhile.
			k.h(pc, buf[:n], from)
		}
		k.mu.Lock()
		k.reading--
		k.cond.Broadcast()
		stopped := k.stopped
		k.mu.Unlock()
		switch {
		case err == nil:
			delay = 5 * time.Millisecond
		case stopped || errors.Is(err, net.ErrClosed):
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			// Paused or stopped; the loop looks again.
		case isTemporary(err):
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
		default:
			return fmt.Errorf("read %s: %w", pc.LocalAddr(), err)
		}
	}
}

func (k *datagramKind) pause() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.paused = true
	for _, pc := range k.pcs {
		pc.SetReadDeadline(past)
	}
	for k.reading > 0 {
		k.cond.Wait()
	}
}

func (k *datagramKind) resume() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.paused = false
	for _, pc := range k.pcs {
		pc.SetReadDeadline(time.Time{})
	}
	k.cond.Broadcast()
}

func (k *datagramKind) stopAccepting() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopped = true
	for _, pc := range k.pcs {
		pc.SetReadDeadline(past)
	}
	k.cond.Broadcast()
}

func (k *datagramKind) connections() int { return 0 }
func (k *datagramKind) longLived() int   { return 0 }

// release waits for the loops, which return once stopAccepting has been
// called and their handler, if one is running, has returned.
func (k *datagramKind) release(ctx context.Context) {
	select {
	case <-k.loopsDone():
	case <-ctx.Done():
	}
}

// loopsDone is closed when every loop has returned.
func (k *datagramKind) loopsDone() <-chan struct{} {
	done := make(chan struct{})
	go func() { k.loops.Wait(); close(done) }()
	return done
}

func (k *datagramKind) drain(ctx context.Context) (drain.Report, error) {
	start := time.Now()
	k.stopAccepting()
	select {
	case <-k.loopsDone():
		return drain.Report{Duration: time.Since(start)}, nil
	case <-ctx.Done():
		k.mu.Lock()
		cut := k.reading
		k.mu.Unlock()
		return drain.Report{Duration: time.Since(start), Cut: cut},
			fmt.Errorf("%w: %d datagram handlers still running: %w", drain.ErrCut, cut, context.Cause(ctx))
	}
}

// isTemporary reports whether a read error of a datagram socket passes:
// out of buffers or memory, or an ICMP error queued on the socket.
func isTemporary(err error) bool {
	return errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) || errors.Is(err, syscall.ECONNREFUSED)
}

// holdKind keeps a socket open without serving it.
type holdKind struct {
	why   string
	dgram bool
}

func (k *holdKind) datagram() bool                              { return k.dgram }
func (k *holdKind) check() error                                { return nil }
func (k *holdKind) setup(drain.Options)                         {}
func (k *holdKind) serve(any) error                             { return nil }
func (k *holdKind) pause()                                      {}
func (k *holdKind) resume()                                     {}
func (k *holdKind) stopAccepting()                              {}
func (k *holdKind) release(context.Context)                     {}
func (k *holdKind) connections() int                            { return 0 }
func (k *holdKind) longLived() int                              { return 0 }
func (k *holdKind) drain(context.Context) (drain.Report, error) { return drain.Report{}, nil }
