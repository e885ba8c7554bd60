//go:build linux

package main

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// isInit reports whether webapp is PID 1 of its PID namespace: the init
// of a container, with no systemd and nobody else to reap orphans.
func isInit() bool { return os.Getpid() == 1 }

// reapOrphans waits for every child that exits, for as long as the
// process runs: as PID 1 webapp inherits every orphan of its namespace,
// and an unreaped one stays a zombie. It reaps any child, which is safe because webapp as
// PID 1 starts none of its own (reloads are refused there).
func reapOrphans(log interface{ Debugf(string, ...any) }) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		for {
			// Orphans that exited before the handler was in place, and
			// several exits behind one SIGCHLD, are all reaped here.
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if err != nil || pid <= 0 {
					break
				}
				log.Debugf("reaped orphan pid %d (%s)", pid, describeWait(ws))
			}
			<-sig
		}
	}()
}

func describeWait(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}
