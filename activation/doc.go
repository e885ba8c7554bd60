// Package activation gives a service its listening sockets by name: those
// the service manager passed (socket activation), else those a previous
// generation of the binary handed on, else sockets it binds itself. It keeps
// the *os.File under every listener so that the set can be handed on to the
// next generation.
//
//	set, err := activation.Listen(ctx, activation.Spec{Name: "http", Address: "127.0.0.1:8080"})
//	if err != nil {
//		return err // names the fd and what was wrong with it
//	}
//	defer set.Close()
//	l, err := set.Listener("http")
//
// # Socket activation
//
// Listen follows sd_listen_fds(3) and sd_listen_fds_with_names(3). It reads
//
//   - LISTEN_PID: the process the descriptors are for. Absent, or another
//     process's id, means "not activated": Listen binds the fallback
//     addresses (and still unsets the variables below, so that a child does
//     not see them). Not a positive number: ErrBadEnvironment.
//   - LISTEN_FDS: how many descriptors, from fd 3 on. Absent means "not
//     activated"; not a number, negative, zero or more than 65536:
//     ErrBadEnvironment.
//   - LISTEN_FDNAMES: their names, colon-separated, one per descriptor
//     (a count that differs from LISTEN_FDS: ErrBadEnvironment). Absent, every
//     descriptor is named "unknown" as in sd_listen_fds_with_names(3), which
//     no Spec asks for unless it is named so.
//
// It unsets all three (and the BATON_LISTEN_* variables below) once read,
// whatever it found, so socket activation works once per process. Passed
// descriptors are marked close-on-exec. The descriptors go through
// go-systemd's activation.Files after the environment has been validated
// here (go-systemd silently ignores bad input).
//
// The match is strict: every passed descriptor must carry a name some Spec
// asks for (else ErrUnexpectedName) and be of the Spec's kind: a listening
// stream socket, TCP or unix (else ErrNotStream), or for a Spec with a
// datagram Network a datagram socket, UDP or unixgram (else
// ErrNotDatagram); a Spec without Multiple takes exactly one descriptor
// (else ErrDuplicateName); every Spec must get one unless it is Optional
// (else ErrMissing: a passed set is never completed by binding). On any error
// Listen closes every descriptor and listener it took and returns every
// problem it found. When the environment itself is bad (ErrBadEnvironment),
// or when a descriptor in the claimed range is not an open socket
// (ErrBadEnvironment or ErrNotStream), nothing is taken: the environment
// does not say reliably which descriptors are ours, and a LISTEN_FDS larger
// than what was passed would otherwise have Listen close descriptors of the
// Go runtime or of the program. The claimed descriptors are then marked
// close-on-exec and left open.
//
// The units: name every socket with FileDescriptorName= and ask for the
// same names in the Specs.
//
//	# webapp.socket
//	[Socket]
//	ListenStream=127.0.0.1:8080
//	FileDescriptorName=http
//
//	# webapp.service
//	[Unit]
//	Requires=webapp.socket
//	After=webapp.socket
//	[Service]
//	ExecStart=/usr/bin/webapp serve
//
// Descriptors the service gave to systemd's file descriptor store
// (systemd.Notifier.Store, FDSTORE=1 with FDNAME=) come back the same way
// after a restart: in LISTEN_FDS, named by their FDNAME= in
// LISTEN_FDNAMES, so a Spec of that name takes them and the Set's Source
// is Systemd. A service without a .socket unit binds its Spec's Address on
// its first start, stores the socket, and takes it back by name from then
// on.
//
// Established connections a service stores come back too: a descriptor
// named ConnName(socket) ("conn-http") is a connection of that socket, not
// a listener. Listen gives those of a stream Spec to Set.TakeConns for the
// service to go on serving, and lists every such name in Set.ConnNames so
// that the service removes them from the store (FDSTOREREMOVE=1) once it
// holds them. One it cannot serve (not a connected stream socket, or of a
// socket no stream Spec asks for) is closed and reported by Set.Dropped;
// it does not fail Listen, so a stale connection never blocks a start.
//
// A second socket unit for the same service (say admin.socket with
// FileDescriptorName=admin and Service=webapp.service, listed in Sockets=
// of the service) adds a second name; ListenStream= twice in one unit
// gives two descriptors of one name, which needs Spec.Multiple.
//
// # Handing on to a new generation
//
// Set.Export returns the files to append to exec.Cmd.ExtraFiles and these
// environment entries for the child:
//
//   - BATON_LISTEN_PARENT: the pid of the process that exported. The child
//     takes the descriptors only if it equals os.Getppid(), or if
//     BATON_LISTEN_PID equals os.Getpid() (a starter that knows the new
//     pid, such as a shell that exports BATON_LISTEN_PID=$$ before it
//     execs the program, sets that one), so a grandchild
//     that merely inherits the environment does not; LISTEN_PID cannot be
//     used, as the child's pid is unknown before it is started.
//   - BATON_LISTEN_FDS_START: the fd of the first descriptor in the child
//     (at least 3).
//   - BATON_LISTEN_FDS, BATON_LISTEN_FDNAMES: as LISTEN_FDS and
//     LISTEN_FDNAMES; the names are required.
//
// They are read, validated, unset and matched to the Specs exactly as the
// systemd variables are, and the Set's Source is Inherited. A process
// addressed by both LISTEN_PID and BATON_LISTEN_PARENT fails with
// ErrBadEnvironment rather than guess which set is current (systemd does not
// start a service from a process that still carries its own LISTEN_*: Listen
// unset them). A variable that addresses another process is ignored. If the
// parent dies before the child calls Listen, the child is reparented, no
// longer recognises the descriptors and binds instead.
//
// # Binding
//
// When nothing was passed, Listen binds each Spec's Network and Address
// with a net.ListenConfig, honouring ctx. A Spec without Address fails with
// ErrMissing. For the unix network, a socket file already at the path is
// probed with a connect: if the connect is refused nobody listens and the
// file is removed; if it succeeds, Listen fails with EADDRINUSE (the
// listener sees one connection open and close). A path that is not a
// socket is never removed. Abstract addresses ("@name") are bound as given.
//
// A bound unix socket is unlinked by Set.Close, unless the Set was handed on
// (Set.Files or Set.Export was called): a new generation may still serve
// on that path, and the old generation's Close must not take it away. The
// file then stays behind when the last generation stops and the next start
// removes it as stale. Listeners taken from descriptors never unlink.
//
// On platforms without unix sockets and descriptor passing, Listen only
// binds; passed descriptors fail with an error wrapping errors.ErrUnsupported
// and a Set has no files to hand on.
package activation
