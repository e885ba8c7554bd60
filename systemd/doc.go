// Package systemd talks to the service manager: typed sd_notify(3) states,
// BARRIER=1 synchronisation, the watchdog, and the journal.
//
// # Notify protocol
//
// A service started with Type=notify finds the address of systemd's notify
// socket in NOTIFY_SOCKET (a path, or an abstract name starting with '@').
// Open reads it once and keeps it; the variable stays in the environment so
// that a new generation of the service started during a reload can notify
// too (that needs NotifyAccess=all in the unit). Each Notify call sends one
// datagram, so states that must be seen together, such as MAINPID= and
// READY=1, go in one call.
//
// Barrier sends BARRIER=1 with the write end of a pipe attached as
// SCM_RIGHTS and waits until systemd closes it, which it does once it has
// processed every message sent before. go-systemd's daemon package cannot
// attach descriptors, so this package writes the datagrams itself; it takes
// the state names and MONOTONIC_USEC from go-systemd.
//
// A nil *Notifier is valid and does nothing: Open returns ErrNotSupervised
// (which matches os.ErrNotExist) when NOTIFY_SOCKET is unset, and callers may
// go on with the nil notifier it returns.
//
// # File descriptor store
//
// Store hands descriptors to systemd's file descriptor store (FDSTORE=1,
// FDNAME=); systemd keeps them while the service restarts and passes them
// to the next start in LISTEN_FDS and LISTEN_FDNAMES, so a service that
// binds its own listener without a .socket unit can store it once and
// take it back by name (activation.Listen) after every restart: the
// socket never closes, and connections wait in its backlog instead of
// being refused. Established connections can go the same way (baton
// stores idle ones at a stop under activation.ConnName, and the next start
// serves them on), since systemd keeps any descriptor: a TCP connection in
// the store stays open, and what its client sends meanwhile waits in the
// kernel. RemoveStored (FDSTOREREMOVE=1) drops a name. The unit
// needs FileDescriptorStoreMax=; systemd 254 and later also set $FDSTORE
// to it (StoreCapacity), systemd 252 does not. Measured on 252 and 257:
// the store survives `systemctl restart` and is emptied by `systemctl
// stop`; without FileDescriptorStoreMax= systemd closes what it is sent
// and logs "Cannot store more fds than FileDescriptorStoreMax=0".
//
//	[Service]
//	Type=notify
//	FileDescriptorStoreMax=4
//	ExecStart=/usr/bin/webapp serve --fd-store
//
// # Watchdog
//
// With WatchdogSec= in the unit, systemd sets WATCHDOG_USEC (and
// WATCHDOG_PID). WatchdogInterval reads WATCHDOG_USEC; RunWatchdog pings
// at half that interval, and only while a health check passes, so a
// service that can no longer serve is restarted by systemd.
//
// A minimal unit:
//
//	[Service]
//	Type=notify
//	NotifyAccess=all
//	WatchdogSec=10s
//	ExecStart=/usr/bin/webapp serve
//
// # Journal
//
// JournalStream tells whether standard error is connected to the journal
// (JOURNAL_STREAM names its device and inode), so that a program can drop
// timestamps and prefix lines with a syslog priority such as "<4>", which
// journald turns into the entry's priority (SyslogLevelPrefix=, on by
// default).
package systemd
