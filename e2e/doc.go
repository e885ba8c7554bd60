// Package e2e holds the end-to-end tests of webapp against a real systemd
// booted in a throwaway sandbox (package systemd/systemdtest): socket
// activation, stop, restart, reload, hostile clients and descriptor
// exhaustion, package install and upgrade, and a fleet of three instances
// behind HAProxy and nginx (TestFleet, which runs both balancers from
// Debian's haproxy and nginx-light on the host), under load from package
// internal/load. It has no code outside its tests.
package e2e
