// Package systemdtest boots a real systemd as PID 1 of a throwaway sandbox
// (a "box") and drives it from a test, so that end-to-end tests meet real
// .socket and .service units, systemctl, journalctl and dpkg -i.
//
// A box boots to "running" in about 0.3 s and is torn down in about 0.15 s.
// Its file system is an overlay of the host's root with a tmpfs on top: it
// sees the host's binaries, and nothing it writes reaches the host.
//
//	func TestMain(m *testing.M) {
//		systemdtest.Sweep("") // boxes left by killed test runs
//		code := m.Run()
//		systemdtest.Sweep("")
//		os.Exit(code)
//	}
//
//	func TestWebapp(t *testing.T) {
//		box := systemdtest.Boot(t, systemdtest.Options{})
//		port := systemdtest.Port(t)
//		box.CopyFile(t, "../../bin/webapp", "/usr/bin/webapp", 0o755)
//		box.WriteFile(t, "/etc/systemd/system/webapp.socket", socketUnit(port), 0o644)
//		box.WriteFile(t, "/etc/systemd/system/webapp.service", serviceUnit, 0o644)
//		box.Systemctl(t, "daemon-reload")
//		box.Systemctl(t, "start", "webapp.socket")
//		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
//		...
//		if got := box.Show(t, "webapp.service", "ActiveState")["ActiveState"]; got != "active" { ... }
//	}
//
// # Other systemd versions
//
// Options.Root replaces the host's root as the overlay's lower layer.
// DebianRoot builds such a root for a Debian suite with mmdebstrap on first
// use (Trixie, Debian 13, systemd 257: about 40 s and 400 MB here) and
// caches it under /var/tmp as baton-<suite>-<hash>; `make deps` builds it
// ahead. Versions returns the host's systemd and Debian 13's, named
// "systemd252" and "systemd257" for subtests, and Box.SystemdVersion
// what the booted box runs; Boot logs it. Where the root cannot be built
// the policy below applies (fail under CI=true, skip otherwise). The host's
// systemd-nspawn (252) boots either.
//
// Binaries for a box are best built with CGO_ENABLED=0. A box shares the
// host's network unless Options.PrivateNetwork is set; then the host reaches
// it only through Box.DialContext (e.g. as an http.Transport's DialContext).
//
// # Requirements and skip policy
//
// Linux, root, systemd (/lib/systemd/systemd), util-linux (nsenter,
// setpriv, findmnt), overlayfs, a cgroup2 hierarchy, and systemd-nspawn,
// which EnsureNspawn installs with apt-get (Debian package
// systemd-container) if it is missing. PID 1 of the host need not be
// systemd. Where a box cannot be booted, Boot (through Require) fails the
// test if the environment variable CI is true, and otherwise skips it with
// one line saying why and how to run it (`sudo make test`).
//
// # The recipe
//
// Boot claims a state directory DIR = Options.Dir/<name> (DefaultDir,
// /var/tmp/baton-sdbox, by default) and holds an flock on it while the box
// is in use. It then starts /bin/sh in a new session and a new, private
// mount namespace (so that no mount can reach the host), which:
//
//  1. joins the box's cgroups, /sys/fs/cgroup/{systemd,unified}/baton-sdbox/<name>
//     on a hybrid host, /sys/fs/cgroup/baton-sdbox/<name> on a pure cgroup v2 one;
//  2. mounts a tmpfs over /run (systemd-nspawn keeps state there), a tmpfs
//     at DIR/rw and an overlay lowerdir=/,upperdir=DIR/rw/upper at DIR/root,
//     and checks them;
//  3. copies the image customisation onto DIR/root: an empty /etc/fstab, a
//     fresh machine-id, a hostname, baton-sdbox.target (basic.target only)
//     as the default target, masks for units the host image enables
//     (postgresql, apt, man-db, e2scrub, fstrim, dpkg-db-backup timers,
//     timesyncd, tmpfiles-clean, getty, logind, pstore), journald
//     Storage=volatile and RateLimitBurst=0; it removes
//     /usr/sbin/policy-rc.d, which would stop maintainer scripts from
//     starting services;
//  4. execs systemd-nspawn --boot --register=no --keep-unit
//     --link-journal=no --console=read-only --kill-signal=SIGRTMIN+4
//     [--private-network] with SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (pure
//     cgroup v2 inside, like a stock Debian 12) and a clean environment (no
//     NOTIFY_SOCKET, no LISTEN_*). Its console goes to DIR/console.log,
//     which a boot failure quotes.
//
// The box is up when nspawn has a child that is PID 1 of a new PID
// namespace, its /run/systemd/private exists, and `systemctl
// is-system-running --wait` inside says "running" ("degraded" fails the
// boot, listing the failed units). Commands run inside through
// `nsenter -t PID1 -a -r -w`, with PID 1's capability bounding set
// (setpriv) and a clean environment, like systemd's own children.
//
// Teardown sends SIGTERM to nspawn (systemd powers the box off), SIGKILL to
// nspawn and the box's PID 1 after 5 s, kills whatever is left in the
// box's cgroups (cgroup.kill), removes the cgroups and the state directory,
// and reports any process, cgroup or mount left behind. If the test process
// dies instead, nspawn gets SIGTERM from the kernel (parent-death signal)
// and the box powers off; Sweep removes what remains.
//
// # Inside a box
//
// Works: socket activation, Type=notify, reload, restart, stop, timers,
// transient units (systemd-run), the journal, dpkg -i and rpm -i with their
// maintainer scripts, DynamicUser=, and the sandboxing settings of
// webapp.service. Differences from a real machine:
//
//   - No cgroup controllers reach the box: MemoryMax=, CPUQuota=, TasksMax=
//     are accepted but not enforced.
//   - On the host's network the box has no CAP_NET_ADMIN: a unit's
//     PrivateNetwork=yes works but its loopback stays down (systemd logs
//     "Failed to configure loopback network device"); sockets passed in
//     by a .socket unit are unaffected.
//   - logind, getty and timesyncd are masked: no user sessions, no
//     `systemctl --user`, no loginctl. /sys is read-only: no udev, sysctl
//     or kernel modules. The clock cannot be set.
//   - The host's root is the lower layer: host files show through and
//     packages installed on the host are installed in the box. Install what
//     is under test into the box, not onto the host.
//   - Processes started with Box.Command are not supervised by the box's
//     systemd; use systemd-run --wait --pipe for helpers that must be.
//   - Names in DialContext addresses resolve with the host's configuration.
//
// State directories must not contain white space, commas or colons
// (overlayfs options). Boxes run in parallel without colliding: each has a
// unique name, state directory and cgroup, and Port hands out distinct
// ports even across test processes.
package systemdtest
