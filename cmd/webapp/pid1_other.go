//go:build !linux

package main

// isInit is false where webapp cannot reap: it runs as PID 1 only on
// Linux containers.
func isInit() bool { return false }

func reapOrphans(interface{ Debugf(string, ...any) }) {}
