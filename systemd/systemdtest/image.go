package systemdtest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

const (
	// targetName is the unit the box boots to: basic.target and nothing else.
	targetName = "baton-sdbox.target"
	// mountSourcePrefix names the sources of the box's mounts, so that a
	// leak into the host's mount namespace can be recognised.
	mountSourcePrefix = "baton-sdbox"
	// boxPATH is the PATH of every command run inside a box.
	boxPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// maskedUnits are enabled in the host image but must never run in a box:
// they would slow the boot down, fail in a container or do maintenance.
var maskedUnits = []string{
	"postgresql.service", "postgresql@.service",
	"apt-daily.timer", "apt-daily.service",
	"apt-daily-upgrade.timer", "apt-daily-upgrade.service",
	"dpkg-db-backup.timer", "dpkg-db-backup.service",
	"man-db.timer", "man-db.service",
	"e2scrub_all.timer", "e2scrub_all.service", "e2scrub_reap.service",
	"fstrim.timer", "fstrim.service",
	"systemd-timesyncd.service",
	"systemd-tmpfiles-clean.timer",
	"systemd-pstore.service",
	"getty@tty1.service", "console-getty.service",
	"systemd-logind.service",
}

// maskedGenerators would add units for the host's database clusters, SysV
// scripts and consoles.
var maskedGenerators = []string{
	"postgresql-generator", "systemd-sysv-generator", "systemd-getty-generator",
}

// seedFile is one file of the seed tree; a non-empty link makes a symlink.
type seedFile struct {
	path string
	data string
	link string
}

// seedFiles returns the files copied onto the box's root before boot.
func seedFiles(hostname, machineID string) []seedFile {
	files := []seedFile{
		{path: "etc/fstab", data: "# systemdtest: no file systems\n"},
		{path: "etc/hostname", data: hostname + "\n"},
		{path: "etc/machine-id", data: machineID + "\n"},
		{path: "etc/systemd/journald.conf.d/baton-sdbox.conf", data: "[Journal]\n" +
			"Storage=volatile\nRateLimitBurst=0\nForwardToConsole=no\n"},
		{path: "etc/systemd/system.conf.d/baton-sdbox.conf", data: "[Manager]\n" +
			"ShowStatus=no\nLogColor=no\n"},
		{path: "etc/systemd/system/" + targetName, data: "[Unit]\n" +
			"Description=systemdtest sandbox (basic.target only)\n" +
			"Requires=basic.target\nAfter=basic.target\nAllowIsolate=yes\n"},
		{path: "etc/systemd/system/default.target", link: targetName},
	}
	for _, u := range maskedUnits {
		files = append(files, seedFile{path: "etc/systemd/system/" + u, link: "/dev/null"})
	}
	for _, g := range maskedGenerators {
		files = append(files, seedFile{path: "etc/systemd/system-generators/" + g, link: "/dev/null"})
	}
	return files
}

// writeSeed writes the seed tree into dir.
func writeSeed(dir, hostname string) error {
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	for _, f := range seedFiles(hostname, hex.EncodeToString(id)) {
		p := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		var err error
		if f.link != "" {
			err = os.Symlink(f.link, p)
		} else {
			err = os.WriteFile(p, []byte(f.data), 0o644)
		}
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

// bootScript runs in a fresh private mount namespace (the process was
// started with CLONE_NEWNS and / remounted private), joins the box's
// cgroups, mounts /run, the tmpfs and the overlay, customises the image and
// execs systemd-nspawn ("$@"). Every mount dies with the namespace.
//
// Environment: BOX_NAME, BOX_DIR (the state directory), BOX_LOWER (the
// overlay's lower layer: / or a Debian root), BOX_CGROUP_PROCS (cgroup.procs
// files to join, space separated; paths never contain spaces).
const bootScript = `set -eu
if [ "$(findmnt -n -o PROPAGATION --mountpoint /)" != private ]; then
	echo "systemdtest: / is not private in the box's mount namespace; refusing to mount" >&2
	exit 1
fi
for f in $BOX_CGROUP_PROCS; do echo $$ > "$f"; done
mount -t tmpfs -o mode=0755,size=64m "baton-sdbox-run-$BOX_NAME" /run
mount -t tmpfs -o mode=0755,size=2g "baton-sdbox-rw-$BOX_NAME" "$BOX_DIR/rw"
mkdir "$BOX_DIR/rw/upper" "$BOX_DIR/rw/work"
mount -t overlay -o "lowerdir=$BOX_LOWER,upperdir=$BOX_DIR/rw/upper,workdir=$BOX_DIR/rw/work" "baton-sdbox-root-$BOX_NAME" "$BOX_DIR/root"
if [ "$(findmnt -n -o FSTYPE --mountpoint "$BOX_DIR/rw")" != tmpfs ] ||
   [ "$(findmnt -n -o FSTYPE --mountpoint "$BOX_DIR/root")" != overlay ]; then
	echo "systemdtest: tmpfs or overlay not mounted under $BOX_DIR" >&2
	exit 1
fi
cp -a "$BOX_DIR/seed/." "$BOX_DIR/root/"
# This image's policy-rc.d exits 101: maintainer scripts would not start services.
rm -f "$BOX_DIR/root/usr/sbin/policy-rc.d"
echo "systemdtest: exec $*"
exec "$@"
`

// nspawnArgs returns the systemd-nspawn command line that boots the box.
func nspawnArgs(nspawn, dir, name string, privateNetwork bool) []string {
	args := []string{nspawn,
		"--quiet", "--boot",
		"--directory=" + filepath.Join(dir, rootDir),
		"--machine=" + name,
		"--register=no", "--keep-unit",
		"--link-journal=no", "--resolv-conf=off", "--timezone=off",
		"--console=read-only",
		"--kill-signal=SIGRTMIN+4",
	}
	if privateNetwork {
		args = append(args, "--private-network")
	}
	return append(args, "--", "--unit="+targetName)
}
