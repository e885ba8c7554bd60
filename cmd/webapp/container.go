package main

import (
	"os"

	"github.com/sirupsen/logrus"
)

// reloadRefused is what webapp logs for a SIGHUP as PID 1.
const reloadRefused = "reload refused: webapp is PID 1 (a container without systemd), and a new generation started by it would be its own child, ended with the container when the old one exits; replace the container with a new image instead (a rolling update in Kubernetes)"

// asInit sets webapp up as the init of a container when it is PID 1: it
// reaps every orphan of its namespace, and refuses reloads, logging why
// for each SIGHUP. It returns the channel to hand baton.Run as Reload:
// hup itself when webapp is not PID 1, nil (no reloads) when it is.
func asInit(cfg *serveConfig, hup <-chan os.Signal, log *logrus.Logger) (<-chan os.Signal, error) {
	if !isInit() {
		return hup, nil
	}
	if cfg.control != "" {
		return nil, &usageError{msg: "--control " + cfg.control + ": webapp is PID 1 (a container): reloads are refused there, so it opens no control socket; roll out a new image instead", cmd: "serve"}
	}
	log.Infof("running as PID 1 (a container): reaping orphans; SIGHUP and reloads are refused")
	// Both run until the process exits: orphans and SIGHUPs may come
	// during the drain too.
	reapOrphans(log)
	go func() {
		for range hup {
			log.Warnf("%s", reloadRefused)
		}
	}()
	return nil, nil
}
