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
//     that name them), one end of a socketpair for the handshake, and the
//     control socket, if any. Their descriptor numbers are passed in
//     BATON_UPGRADE_FD and BATON_CONTROL_FD. The child is started through
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
//     sockets, then writes "ready" on the socketpair.
//  3. The old generation, still the main process, commits: it sends
//     MAINPID=<new pid> with READY=1, waits for BARRIER=1 so that systemd
//     has processed it, closes its copy of the control socket and writes
//     "commit". Only then does the new generation start accepting.
//  4. The old generation stops accepting and drains (the caller does that
//     when HandedOver is closed), without STOPPING=1: the service is not
//     stopping. Both generations accept from the same socket meanwhile, so
//     no queued connection is ever orphaned.
//
// If the new binary cannot be started, exits, crashes, or is not ready
// within Options.Timeout, the old generation kills it (it has accepted no
// connection), stays the main process, sends READY=1 with
// STATUS=reload failed: <why>, and Upgrade returns the reason. A request
// for an upgrade while one is under way waits for that one and gets its
// outcome, so there are never two new generations. After a successful
// upgrade, further requests get ErrHandedOver.
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
// is checked first; then the request must be exactly "reload\n" (or
// "pid\n", which asks for the serving process's id), at most 256 bytes
// and within 10 seconds. The answer is "ok <pid> <microseconds>\n" or
// "error <reason>\n"; anything else (a refused caller, an over-long,
// unfinished or unknown request) gets an error line, is logged, and
// starts nothing. The client takes "ok" only as two plain decimal numbers
// with a positive pid.
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
// systemd 252 has no Type=notify-reload; `ExecReload=kill -HUP $MAINPID`
// would return before the swap is done, which is why the reload command
// waits for the outcome.
package upgrade
