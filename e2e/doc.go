// Package e2e holds the end-to-end tests of webapp against a real systemd
// booted in a throwaway sandbox (package systemd/systemdtest): socket
// activation, stop, restart, reload, hostile clients and descriptor
// exhaustion, and package install and upgrade, under load from package
// internal/load. It has no code outside its tests.
package e2e
