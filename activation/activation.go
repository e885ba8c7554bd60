package activation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Spec asks for the listeners of one name.
type Spec struct {
	// Name is the socket's FileDescriptorName=, e.g. "http". It must be
	// 1 to 255 printable ASCII characters without ':' (systemd's rule).
	Name string
	// Network is the kind of socket and the fallback network: "tcp",
	// "tcp4", "tcp6" or "unix" for a listening stream socket
	// (ListenStream=), "udp", "udp4", "udp6" or "unixgram" for a datagram
	// socket (ListenDatagram=); "" means "tcp". A passed descriptor must be
	// of that kind (a stream socket where a datagram one is asked for, or
	// the reverse, is an error); its family may differ.
	Network string
	// Address is the fallback address, e.g. "127.0.0.1:8080" or
	// "/run/x.sock", bound when nothing was passed to the process. Empty
	// means no fallback: Listen then fails with ErrMissing.
	Address string
	// Multiple accepts several descriptors under this name (e.g.
	// ListenStream= given twice in one socket unit). By default exactly
	// one is required. A fallback bind always makes exactly one.
	Multiple bool
	// Optional makes the socket one the service can do without: when
	// descriptors were passed but none of this name, Listen does not fail
	// and the Set holds nothing of that name. Without descriptors passed,
	// an Optional Spec with an Address is bound like any other, and one
	// without is left out.
	Optional bool
}

// Datagram reports whether the Spec asks for a datagram socket.
func (sp Spec) Datagram() bool { return datagramNetworks[sp.Network] }

// Source says where the listeners of a Set came from.
type Source int

const (
	// Bound: nothing was passed in; Listen bound the Specs' fallback
	// addresses itself.
	Bound Source = iota
	// Systemd: the service manager passed them (LISTEN_FDS).
	Systemd
	// Inherited: a previous generation of the binary passed them
	// (Set.Export).
	Inherited
)

func (s Source) String() string {
	switch s {
	case Bound:
		return "bound"
	case Systemd:
		return "systemd"
	case Inherited:
		return "inherited"
	}
	return "Source(" + strconv.Itoa(int(s)) + ")"
}

// File is one descriptor of a Set with its name.
type File struct {
	Name string
	File *os.File
}

// Set holds the named listeners Listen made and the files under them. Its
// methods are safe for concurrent use.
type Set struct {
	source  Source
	names   []string                    // Spec order, of the names it holds
	byName  map[string][]net.Listener   // descriptor order within a name
	packets map[string][]net.PacketConn // datagram sockets, likewise
	all     []net.Listener              // descriptor order
	allPC   []net.PacketConn            // descriptor order
	files   []File                      // descriptor order

	conns     map[string][]net.Conn // stored connections by socket name, until taken
	connNames []string              // every ConnName passed, taken or not
	dropped   []error               // descriptors under a ConnName that were closed

	mu       sync.Mutex
	handedOn bool
	closed   bool
	unix     []*net.UnixListener // bound here: Close unlinks their paths unless handed on
	unixgram []string            // datagram socket paths bound here, likewise
}

// Listen returns a listener for every Spec.
//
// If the service manager passed descriptors to this process (LISTEN_PID is
// ours), it takes them by name; if a previous generation did (Set.Export),
// likewise. Every passed descriptor must be a listening stream socket whose
// name a Spec asks for, and every Spec must get one (or several, with
// Multiple); otherwise Listen closes everything it took and returns every
// problem it found, as *FDError values (an *EnvError for a malformed
// environment), joined when there are several. If nothing was passed, it binds each
// Spec's Network and Address, honouring ctx. See the package documentation
// for the environment it reads and unsets.
func Listen(ctx context.Context, specs ...Spec) (*Set, error) {
	if err := checkSpecs(specs); err != nil {
		return nil, err
	}
	p, claimed, err := parseEnv(os.LookupEnv, os.Getpid(), os.Getppid())
	if err != nil {
		for _, r := range claimed {
			markCloseOnExec(r)
		}
		unsetEnv()
		return nil, err
	}
	if p.source == Bound {
		unsetEnv()
		return bind(ctx, specs)
	}
	files, err := takeFiles(p)
	unsetEnv()
	if err != nil {
		return nil, err
	}
	return adopt(specs, p, files)
}

func unsetEnv() {
	for _, v := range envVars {
		os.Unsetenv(v)
	}
}

var (
	streamNetworks   = map[string]bool{"": true, "tcp": true, "tcp4": true, "tcp6": true, "unix": true}
	datagramNetworks = map[string]bool{"udp": true, "udp4": true, "udp6": true, "unixgram": true}
)

func checkSpecs(specs []Spec) error {
	var errs []error
	seen := make(map[string]bool)
	for _, sp := range specs {
		switch {
		case !validName(sp.Name):
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: fmt.Errorf("%w: a name is 1 to 255 printable ASCII characters without ':'", ErrBadSpec)})
		case seen[sp.Name]:
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: fmt.Errorf("%w: name given twice", ErrBadSpec)})
		case !streamNetworks[sp.Network] && !datagramNetworks[sp.Network]:
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: fmt.Errorf("%w: network %q is not tcp, tcp4, tcp6, unix, udp, udp4, udp6 or unixgram", ErrBadSpec, sp.Network)})
		}
		seen[sp.Name] = true
	}
	return joinErrors(errs...)
}

// validName is systemd's fdname_is_valid, less the empty name.
func validName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] >= 0x7f || s[i] == ':' {
			return false
		}
	}
	return true
}

func newSet(source Source) *Set {
	return &Set{source: source, byName: make(map[string][]net.Listener), packets: make(map[string][]net.PacketConn), conns: make(map[string][]net.Conn)}
}

// held records the names the Set holds, in Spec order.
func (s *Set) held(specs []Spec) {
	for _, sp := range specs {
		if len(s.byName[sp.Name]) > 0 || len(s.packets[sp.Name]) > 0 {
			s.names = append(s.names, sp.Name)
		}
	}
}

// add records a listener and the file under it (nil if the platform has
// none).
func (s *Set) add(name string, l net.Listener, f *os.File) {
	s.byName[name] = append(s.byName[name], l)
	s.all = append(s.all, l)
	if f != nil {
		s.files = append(s.files, File{Name: name, File: f})
	}
}

// addPacket records a datagram socket and the file under it.
func (s *Set) addPacket(name string, pc net.PacketConn, f *os.File) {
	s.packets[name] = append(s.packets[name], pc)
	s.allPC = append(s.allPC, pc)
	if f != nil {
		s.files = append(s.files, File{Name: name, File: f})
	}
}

// adopt turns passed files into listeners, checking them against specs. It
// owns files: on error every one of them is closed.
func adopt(specs []Spec, p passed, files []*os.File) (*Set, error) {
	s := newSet(p.source)
	want := make(map[string]Spec, len(specs))
	for _, sp := range specs {
		want[sp.Name] = sp
	}
	seen := make(map[string][]int) // descriptors per name
	var errs []error
	for i, f := range files {
		fd, name := p.first+i, p.names[i]
		if socket, ok := strings.CutPrefix(name, ConnPrefix); ok {
			s.addStoredConn(want, socket, name, fd, f)
			continue
		}
		sp, ok := want[name]
		if !ok {
			errs = append(errs, &FDError{FD: fd, Name: name, Err: unexpectedName(p, specs)})
			continue
		}
		prev := seen[name]
		seen[name] = append(prev, fd)
		if len(prev) > 0 && !sp.Multiple {
			errs = append(errs, &FDError{FD: fd, Name: name, Err: fmt.Errorf("%w: fd %d has this name too; Spec.Multiple accepts several", ErrDuplicateName, prev[0])})
			continue
		}
		if sp.Datagram() {
			if err := checkDatagram(f); err != nil {
				errs = append(errs, &FDError{FD: fd, Name: name, Err: err})
				continue
			}
			pc, err := net.FilePacketConn(f)
			if err != nil {
				errs = append(errs, &FDError{FD: fd, Name: name, Err: err})
				continue
			}
			s.addPacket(name, pc, f)
			continue
		}
		if err := checkListening(f); err != nil {
			errs = append(errs, &FDError{FD: fd, Name: name, Err: err})
			continue
		}
		l, err := net.FileListener(f)
		if err != nil {
			errs = append(errs, &FDError{FD: fd, Name: name, Err: err})
			continue
		}
		s.add(name, l, f)
	}
	for _, sp := range specs {
		if len(seen[sp.Name]) == 0 && !sp.Optional {
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: missingName(p)})
		}
	}
	if len(errs) > 0 {
		for _, cs := range s.conns {
			for _, c := range cs {
				c.Close()
			}
		}
		for _, l := range s.all {
			l.Close()
		}
		for _, pc := range s.allPC {
			pc.Close()
		}
		for _, f := range files {
			f.Close()
		}
		return nil, joinErrors(errs...)
	}
	s.held(specs)
	return s, nil
}

func unexpectedName(p passed, specs []Spec) error {
	if !p.namesSet {
		return fmt.Errorf("%w: %s is not set, so every descriptor is named %q; give the socket FileDescriptorName=", ErrUnexpectedName, envNames, unknownName)
	}
	if len(specs) == 0 {
		return fmt.Errorf("%w: no listener was asked for", ErrUnexpectedName)
	}
	q := make([]string, len(specs))
	for i, sp := range specs {
		q[i] = strconv.Quote(sp.Name)
	}
	return fmt.Errorf("%w: asked for %s", ErrUnexpectedName, strings.Join(q, ", "))
}

func missingName(p passed) error {
	if !p.namesSet {
		return fmt.Errorf("%w: %s is not set; give the socket FileDescriptorName=", ErrMissing, envNames)
	}
	return fmt.Errorf("%w: not among %s=%q", ErrMissing, p.namesVar, strings.Join(p.names, ":"))
}

// bind is the fallback: it binds every Spec's address. On error it closes
// whatever it bound.
func bind(ctx context.Context, specs []Spec) (*Set, error) {
	s := newSet(Bound)
	var errs []error
	for _, sp := range specs {
		if sp.Address == "" && !sp.Optional {
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: fmt.Errorf("%w: nothing was passed to this process and the Spec has no fallback Address", ErrMissing)})
		}
	}
	if len(errs) > 0 {
		return nil, joinErrors(errs...)
	}
	for _, sp := range specs {
		if sp.Address == "" {
			continue // Optional, and nothing to bind
		}
		if err := s.bindOne(ctx, sp); err != nil {
			errs = append(errs, &FDError{FD: -1, Name: sp.Name, Err: err})
			if cerr := s.Close(); cerr != nil {
				errs = append(errs, cerr)
			}
			return nil, joinErrors(errs...)
		}
	}
	s.held(specs)
	return s, nil
}

func (s *Set) bindOne(ctx context.Context, sp Spec) error {
	network := sp.Network
	if network == "" {
		network = "tcp"
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("listen %s %s: %w", network, sp.Address, err)
	}
	if network == "unix" || network == "unixgram" {
		if err := removeStale(ctx, sp.Address); err != nil {
			return err
		}
	}
	var lc net.ListenConfig
	if sp.Datagram() {
		pc, err := lc.ListenPacket(ctx, network, sp.Address)
		if err != nil {
			return err
		}
		f, err := packetFile(pc)
		if err != nil {
			pc.Close()
			return fmt.Errorf("listen %s %s: %w", network, sp.Address, err)
		}
		s.addPacket(sp.Name, pc, f)
		if uc, ok := pc.(*net.UnixConn); ok {
			s.unixgram = append(s.unixgram, uc.LocalAddr().String())
		}
		return nil
	}
	l, err := lc.Listen(ctx, network, sp.Address)
	if err != nil {
		return err
	}
	f, err := listenerFile(l)
	if err != nil {
		l.Close()
		return fmt.Errorf("listen %s %s: %w", network, sp.Address, err)
	}
	s.add(sp.Name, l, f)
	if ul, ok := l.(*net.UnixListener); ok {
		s.unix = append(s.unix, ul)
	}
	return nil
}

// Listener returns the one listener of that name. It fails with ErrMissing
// for a name the Set does not hold (an Optional Spec not passed, or a
// datagram socket: see PacketConn) and with ErrDuplicateName for one that
// holds several (see Listeners).
func (s *Set) Listener(name string) (net.Listener, error) {
	ls := s.byName[name]
	switch len(ls) {
	case 0:
		if len(s.packets[name]) > 0 {
			return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: a datagram socket; PacketConn returns it", ErrMissing)}
		}
		return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: no listener of this name in the set", ErrMissing)}
	case 1:
		return ls[0], nil
	}
	return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: %d listeners of this name; Listeners returns them all", ErrDuplicateName, len(ls))}
}

// Listeners returns the listeners of that name in descriptor order, nil for
// a name the Set does not hold. Each is a *net.TCPListener or a
// *net.UnixListener.
func (s *Set) Listeners(name string) []net.Listener {
	ls := s.byName[name]
	if ls == nil {
		return nil
	}
	return append([]net.Listener(nil), ls...)
}

// PacketConn returns the one datagram socket of that name, with the same
// errors as Listener.
func (s *Set) PacketConn(name string) (net.PacketConn, error) {
	ps := s.packets[name]
	switch len(ps) {
	case 0:
		if len(s.byName[name]) > 0 {
			return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: a stream socket; Listener returns it", ErrMissing)}
		}
		return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: no datagram socket of this name in the set", ErrMissing)}
	case 1:
		return ps[0], nil
	}
	return nil, &FDError{FD: -1, Name: name, Err: fmt.Errorf("%w: %d datagram sockets of this name; PacketConns returns them all", ErrDuplicateName, len(ps))}
}

// PacketConns returns the datagram sockets of that name in descriptor
// order, nil for a name the Set does not hold. Each is a *net.UDPConn or
// a *net.UnixConn.
func (s *Set) PacketConns(name string) []net.PacketConn {
	ps := s.packets[name]
	if ps == nil {
		return nil
	}
	return append([]net.PacketConn(nil), ps...)
}

// Has reports whether the Set holds a socket of that name.
func (s *Set) Has(name string) bool { return len(s.byName[name]) > 0 || len(s.packets[name]) > 0 }

// Source says where the listeners came from.
func (s *Set) Source() Source { return s.source }

// Names returns the names the Set holds, in Spec order (an Optional Spec
// that got nothing is not among them).
func (s *Set) Names() []string { return append([]string(nil), s.names...) }

// Files returns the descriptors under the listeners in descriptor order
// (Spec order for a bound Set): those passed in, kept as they were, or
// duplicates of those Listen bound.
// They stay owned by the Set (Close closes them): hand them on, do not
// close them. Like Export, Files marks the Set handed on, so that Close no
// longer unlinks the unix socket paths it bound.
func (s *Set) Files() []File {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.markHandedOn()
	return append([]File(nil), s.files...)
}

// Export prepares the hand-over of the Set to a new generation of the
// binary started with os/exec. Append files to cmd.ExtraFiles and env to
// cmd.Env; firstFD is the descriptor the first file lands at in the child,
// 3 + len(cmd.ExtraFiles) before appending (a lower value makes the child's
// Listen fail with ErrBadEnvironment). The child's Listen then takes the
// listeners by name, with Source Inherited. env names this process as the
// parent, so a grandchild that merely inherits the environment does not
// take them.
//
// With cmd.Env nil the child would get this process's environment without
// env: set cmd.Env = append(os.Environ(), env...). The files stay owned by
// the Set: keep it open until the child is started
// (or has taken over). Export marks the Set handed on, so that Close no
// longer unlinks the unix socket paths it bound. It returns nothing for a
// closed Set or one without files.
func (s *Set) Export(firstFD int) (files []*os.File, env []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.files) == 0 {
		return nil, nil
	}
	s.markHandedOn()
	names := make([]string, len(s.files))
	files = make([]*os.File, len(s.files))
	for i, f := range s.files {
		names[i], files[i] = f.Name, f.File
	}
	env = []string{
		envInhFDStart + "=" + strconv.Itoa(firstFD),
		envInhFDs + "=" + strconv.Itoa(len(files)),
		envInhNames + "=" + strings.Join(names, ":"),
		envParent + "=" + strconv.Itoa(os.Getpid()),
	}
	return files, env
}

// markHandedOn stops Close from unlinking the socket paths the Set bound:
// a new generation may still serve on them. s.mu is held.
func (s *Set) markHandedOn() {
	if s.handedOn {
		return
	}
	s.handedOn = true
	for _, ul := range s.unix {
		keepSocketPath(ul)
	}
}

// Close closes every listener and file of the Set. Listeners the caller
// closed already are skipped. A unix socket path the Set bound is removed
// unless Files or Export was called. Calls after the first return nil.
func (s *Set) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	for _, l := range s.all {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("activation: close %s: %w", l.Addr(), err))
		}
	}
	for _, pc := range s.allPC {
		if err := pc.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, fmt.Errorf("activation: close %s: %w", pc.LocalAddr(), err))
		}
	}
	for name, cs := range s.conns {
		for _, c := range cs {
			c.Close()
		}
		delete(s.conns, name)
	}
	if !s.handedOn {
		for _, p := range s.unixgram {
			if !strings.HasPrefix(p, "@") { // abstract: no file
				os.Remove(p)
			}
		}
	}
	for _, f := range s.files {
		if err := f.File.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("activation: close %q: %w", f.Name, err))
		}
	}
	return joinErrors(errs...)
}

// joinErrors is errors.Join that returns a single error unwrapped, so that
// a type assertion on it works.
func joinErrors(errs ...error) error {
	var nonNil []error
	for _, err := range errs {
		if err != nil {
			nonNil = append(nonNil, err)
		}
	}
	switch len(nonNil) {
	case 0:
		return nil
	case 1:
		return nonNil[0]
	}
	return errors.Join(nonNil...)
}

// ConnPrefix begins the name under which a service stores an established
// connection of one of its sockets in systemd's file descriptor store:
// ConnName("http") is "conn-http". Listen takes descriptors so named apart
// from the listeners (Set.TakeConns), so that the next start goes on
// serving the connections a restart would otherwise close.
const ConnPrefix = "conn-"

// ConnName is the FDNAME= under which a connection of socket is stored.
func ConnName(socket string) string { return ConnPrefix + socket }

// addStoredConn takes a descriptor passed under ConnName(socket): a
// connected stream socket of a stream Spec's socket goes to conns. Any
// other is closed and recorded in dropped, without failing Listen: a
// connection that cannot be served is lost either way, and refusing the
// start would lose the listeners' queue too.
func (s *Set) addStoredConn(want map[string]Spec, socket, name string, fd int, f *os.File) {
	if !slices.Contains(s.connNames, name) {
		s.connNames = append(s.connNames, name)
	}
	drop := func(err error) {
		f.Close()
		s.dropped = append(s.dropped, &FDError{FD: fd, Name: name, Err: err})
	}
	sp, ok := want[socket]
	switch {
	case !ok:
		drop(fmt.Errorf("%w: a stored connection of socket %q, which no Spec asks for: closed", ErrUnexpectedName, socket))
		return
	case sp.Datagram():
		drop(fmt.Errorf("%w: a stored connection of datagram socket %q: closed", ErrNotStream, socket))
		return
	}
	if err := checkConnected(f); err != nil {
		drop(fmt.Errorf("%w: closed", err))
		return
	}
	c, err := net.FileConn(f)
	f.Close() // FileConn has its own descriptor
	if err != nil {
		s.dropped = append(s.dropped, &FDError{FD: fd, Name: name, Err: fmt.Errorf("%w: closed", err)})
		return
	}
	s.conns[socket] = append(s.conns[socket], c)
}

// TakeConns returns the connections of socket that were passed back from
// the file descriptor store (named ConnName(socket)), in descriptor order,
// and leaves them to the caller: the Set no longer holds or closes them.
// A second call returns none.
func (s *Set) TakeConns(socket string) []net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.conns[socket]
	delete(s.conns, socket)
	return cs
}

// ConnNames returns every ConnName under which descriptors were passed,
// taken or dropped, in the order they came: the names a service removes
// from the store once it holds the connections (FDSTOREREMOVE=1), so that
// a later start does not get them again.
func (s *Set) ConnNames() []string { return slices.Clone(s.connNames) }

// Dropped returns, as *FDError values, the descriptors passed under a
// ConnName that Listen closed: not a connected stream socket, or of a
// socket no stream Spec asks for.
func (s *Set) Dropped() []error { return slices.Clone(s.dropped) }
