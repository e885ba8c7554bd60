// Package upgrade swaps the running binary for the one now installed,
// without dropping a connection: the old generation starts the new one,
// hands it the listening sockets, and leaves only once the new one is
// healthy and systemd knows it as the main process.
//
// # The handshake
//
//  1. The old generation (Upgrader.Upgrade) sends RELOADING=1 with
//     MONOTONIC_USEC=, and starts Options.Path, the binary at its install
//     path (not /proc/self/exe, which still names the replaced file), with
//     the same arguments. The child inherits the listening sockets (the
//     caller's Handover files, from fd 3 on, with the environment entries
//     that name them), the files the reload request carried, if any (see
//     the control socket, below), one end of a socketpair for the
//     handshake, the control socket, if any, and one end of a second
//     socketpair, the conns channel (see Passing connections, below).
//     Their descriptor numbers are passed in BATON_UPGRADE_FD,
//     BATON_CONTROL_FD and BATON_CONNS_FD; the files' as
//     BATON_FILES=<name>:<name>… and BATON_FILES_FD=<the first one's>, the
//     others following it in order. Inherited reads and unsets these
//     variables, and Handoff.Files returns the files; a process started
//     afresh has none. The child is started through
//     /bin/sh, which backgrounds it and exits at once, so that the service
//     manager becomes its parent before it is announced as MAINPID=
//     (systemd does not wait on stop for a main process that is not its
//     child). The inner shell exports its own pid, kept by the program
//     across exec, as BATON_UPGRADE_PID and BATON_LISTEN_PID: only that
//     process takes the descriptors; LISTEN_PID is never faked.
//     WATCHDOG_PID is removed from the child's environment (it names the
//     old generation); WATCHDOG_USEC and NOTIFY_SOCKET are kept.
//  2. The new generation (Inherited, then Handoff.Ready) sets up its server
//     and proves it healthy without accepting a connection from the shared
//     sockets, then writes "ready" on the socketpair (step "ready").
//  3. The old generation calls Options.Pause, if set, and writes "commit"
//     (step "committed"): from here on the new one may read what only one
//     generation may read at a time, such as a datagram socket. The new one
//     starts accepting beside it and answers "accepting"
//     (Handoff.Accepting). Both accept from the same socket meanwhile, so
//     no queued connection is ever orphaned. A new generation that takes
//     connections has written "conns" on the conns channel before that
//     (Handoff.TakeConns).
//  4. The old generation, still the main process, sends MAINPID=<new pid>
//     with READY=1 and waits for BARRIER=1, so that systemd has processed
//     it (step "announced"), and writes "main": the new generation is the
//     service now. If the new one wrote "conns", the old one calls
//     Options.OnConns with a ConnSender, if set; otherwise it closes the
//     conns channel.
//  5. The old generation stops accepting (Options.OnCommit), closes its
//     copy of the control socket, and Upgrade returns; a client that
//     connects after that is answered by the new generation. The caller
//     drains when HandedOver is closed, without STOPPING=1: the service is
//     not stopping.
//
// The old generation goes on accepting until step 5, so whatever happens
// to the new one before systemd knows it as the main process, the old
// one still serves. If the new binary cannot be started, exits, crashes,
// does not say "ready" or "accepting" within Options.Timeout, the old
// generation kills it, stays the main process, sends READY=1 with
// STATUS=reload failed: <why>, and Upgrade returns the reason. Every
// failure after Options.Pause was called (the new one dies, hangs or
// breaks the handshake after the commit, dies as it is announced, or the
// service is told to stop meanwhile) calls Options.Resume once, before
// Upgrade returns; a success never does. A request for an upgrade while
// one is under way waits for that one and gets its outcome, so there are
// never two new generations; a control request that carries files is
// refused instead (ErrBusy), since the new generation under way would not
// get them. After a successful
// upgrade, further requests get ErrHandedOver. Every wait of the old
// generation prefers a line that has arrived to a deadline that has
// passed: a process that was stopped (SIGSTOP) and continued finds all its
// timers run out at once.
//
// # Passing connections
//
// Connections that the old generation would close as it drains (idle
// HTTP/1.1 keep-alive ones, say) can move to the new generation instead:
// the kernel connection, with what waits in its receive queue, survives;
// what the old process has already read into its own buffers does not.
// The channel is protocol-blind; which connections go is the caller's
// choice.
//
// The conns channel is a unix stream socketpair made at the start, like
// the handshake's, the new generation's end named by BATON_CONNS_FD
// (unset by Inherited, close-on-exec). The new generation that takes
// connections calls Handoff.TakeConns after Ready and before Accepting:
// it writes "conns\n" on the channel. After "accepting" has arrived the
// old generation looks for that acknowledgement without waiting (it was
// written first, so it is there or it will not come). With it and
// Options.OnConns set, OnConns gets a ConnSender right after "main" and
// before OnCommit, so that the caller can arm its drain before it stops
// accepting; without either, or when the upgrade fails, the old
// generation closes the channel. The new generation calls
// Handoff.ReceiveConns once Accepting has returned (nil or ErrOrphaned):
// it calls back for each connection, in order, and returns nil when the
// old generation closes its end (ConnSender.Close, or its exit).
//
// Each message is one header line and the descriptors it owns, passed
// with the message's first byte (SCM_RIGHTS):
//
//	conns <name> <n>\n
//
// name is the socket the connections came from (1 to 255 printable ASCII
// characters without ':' or space, as FDNAME=), n from 1 to 253: the
// kernel passes at most 253 descriptors in one message (SCM_MAX_FD). The
// receiver queues descriptors as they arrive and lets each header take
// its n from the head of the queue; a header it cannot read, one that
// claims more descriptors than came, descriptors no header claims at the
// end, an unfinished header, or descriptors the kernel had to drop
// (MSG_CTRUNC) end ReceiveConns with an error, and every descriptor it
// received and did not pass on is closed. ConnSender.Send passes
// concurrent Sends together, one message per name and at most 253
// descriptors, taking only what is already queued when it writes: a
// lone Send costs one message. A message waits at most 5 seconds for
// room in the channel; after a failure (the new generation exited:
// EPIPE; or it took nothing in time) every Send fails at once, and the
// caller closes its connections as it would have without a new
// generation.
//
// Both ways across versions: an older new generation ignores the extra
// descriptor and variable (it keeps the descriptor open, unused), never
// acknowledges, and the old generation closes its end, passing nothing;
// an older old generation passes no channel, and TakeConns returns
// ErrNoConns. The handshake's lines are the same either way.
//
// # When a generation dies or hangs during the hand-over
//
// Measured under the real systemd with 32 keep-alive clients (e2e
// TestHandoverFaults: a generation pauses at the step, the test sends
// SIGKILL or SIGSTOP). No connection is refused in any case: systemd holds
// the socket, and the generation that serves takes up the queue. Requests
// that fail are those that were on a killed process. `systemctl reload`
// exits 0 exactly when the new generation is the main process afterwards.
//
//	step            new dies           new hangs          old dies               old hangs, continued
//	started         old serves, fails  old kills it,      systemd restarts,      the swap completes
//	                                   fails              fails
//	ready           old serves, fails  old kills it,      systemd restarts,      the swap completes
//	                                   fails              fails
//	committed       old serves, fails  old kills it,      new takes over or      the swap completes
//	(new accepts)   (new's connections fails               systemd restarts
//	                lost)
//	announced       systemd restarts   new is main, its   new takes over, ok     the swap completes
//	                or old takes it    queue waits, ok
//	                back; fails
//	draining        systemd restarts   new is main, its   new serves, old's      the swap is done
//	                                   queue waits        connections lost
//
// In words:
//   - The new generation dies or hangs before it is announced: the old one
//     is still the main process and still accepts; it kills the new one
//     and the reload fails with the reason.
//   - The new generation dies after it was announced: it was the main
//     process, so this is a crash of the service; systemd restarts it
//     (Restart=on-failure), unless the old generation, which sees the
//     death and sends MAINPID= of its own, is taken in first and stays.
//     The reload fails either way. A hang after that point is a hang of
//     the service, for WatchdogSec= to catch.
//   - The old generation dies before the new one accepts: the main process
//     died; systemd stops what is left and restarts the service. It dies
//     after the new one accepts: the new one, orphaned (ErrOrphaned),
//     announces itself with MAINPID= of its own and serves; whether
//     systemd took that in before it noticed the old one's death decides
//     between that and a restart. It dies after the announcement: the new
//     one is the service already.
//   - The old generation hangs: nothing else accepts before step 3, so new
//     connections wait in the queue while it is stopped; once continued,
//     the hand-over goes on. From step 3 the new one serves meanwhile.
//
// The reload command (Request) learns of a dead old generation as a
// broken connection; it then asks the control socket who serves, for a
// few seconds, and reports success only if another process answers.
//
// # The control socket
//
// The synchronous reload command reaches the running generation over a
// unix stream socket (ListenControl, ServeControl, Request). It accepts
// requests only from root and from the service's own user (SO_PEERCRED),
// and is handed on to each new generation like the listeners, so its path
// never changes hands.
//
// One connection carries one request line and one answer line. The caller
// is checked first; then the request must be exactly one of
//
//	reload\n
//	reload <name>[:<name>]…\n
//	pid\n
//
// at most 4103 bytes and within 10 seconds. "pid" asks for the serving
// process's id. A reload that names files carries their descriptors
// (SCM_RIGHTS, sent with the line), exactly one for each name, in order;
// at most 16, each a regular file, under distinct names of 1 to 255
// printable ASCII characters without ':' or space (systemd's rules for
// FDNAME=). The new generation that the request starts inherits them
// (Handoff.Files); the old one closes its copies once the upgrade is
// over. The answer is "ok <pid> <microseconds>\n" or "error <reason>\n";
// anything else (a refused caller, an over-long, unfinished or unknown
// request, bad names, descriptors that do not match the names one for one
// or are not regular files) gets an error line, is logged, and starts
// nothing, and every descriptor that came with it is closed. The client
// takes "ok" only as two plain decimal numbers with a positive pid.
//
// Files let a reload command with more privileges than the service hand
// it what it cannot open itself: with ExecReload=+… the command runs as
// root, and can pass a rotated TLS certificate and key that only root
// can read (Request with files).
//
// # Units
//
//	[Service]
//	Type=notify
//	# The new generation is started by the old one and announced with
//	# MAINPID=: systemd must accept notifications from it.
//	NotifyAccess=all
//	RuntimeDirectory=webapp
//	ExecStart=/usr/bin/webapp serve
//	ExecReload=/usr/bin/webapp reload
//	# systemctl reload waits for ExecReload= at most this long.
//	TimeoutStartSec=60s
//
// With Type=notify-reload (systemd 253 and later) and no ExecReload=,
// `systemctl reload` sends SIGHUP and waits for RELOADING=1 and READY=1;
// Options.NotifyReload sends both with the announcement of the new
// generation, and a failed swap leaves the reload to TimeoutStartSec=.
//
// systemd 252 has no Type=notify-reload; `ExecReload=kill -HUP $MAINPID`
// would return before the swap is done, which is why the reload command
// waits for the outcome.
package upgrade
