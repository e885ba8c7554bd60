// Package baton holds the release version of the baton kit.
//
// baton makes a Go network service a first-class systemd citizen: systemd
// owns the listening sockets and hands them over (package activation), the
// service reports its state (package systemd), drains on SIGTERM (package
// drain) and swaps in a new binary on reload without dropping a connection
// (package upgrade). cmd/webapp is the reference service built with it.
package baton
