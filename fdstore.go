package baton

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/baton-dev/baton/activation"
	"github.com/baton-dev/baton/systemd"
)

// storeBound gives the sockets Run bound itself to systemd's file
// descriptor store when Options.FDStore or $FDSTORE asks for it, so that
// the next start after a restart gets them back (LISTEN_FDS, by name)
// instead of binding again: the sockets never close, and a restart refuses
// no connection.
func storeBound(opts Options, notifier *systemd.Notifier, set *activation.Set) {
	if notifier == nil || set.Source() != activation.Bound {
		return
	}
	capacity, told := systemd.StoreCapacity()
	if !opts.FDStore && capacity == 0 {
		return
	}
	byName := map[string][]syscall.Conn{}
	var names []string
	for _, f := range set.Files() {
		if len(byName[f.Name]) == 0 {
			names = append(names, f.Name)
		}
		byName[f.Name] = append(byName[f.Name], f.File)
	}
	if told && capacity < len(set.Files()) {
		opts.Logger.Warnf("file descriptor store: FileDescriptorStoreMax=%d is too small for the %d sockets bound here; systemd closes the rest", capacity, len(set.Files()))
	}
	var stored []string
	for _, name := range names {
		if err := notifier.Store(name, byName[name]...); err != nil {
			opts.Logger.Warnf("file descriptor store: %v", err)
			continue
		}
		stored = append(stored, name)
	}
	if len(stored) > 0 {
		if told {
			opts.Logger.Infof("gave the bound sockets %s to systemd's file descriptor store (FileDescriptorStoreMax=%d): the next start after a restart takes them back", strings.Join(stored, ", "), capacity)
		} else {
			// systemd 252 and 253 do not say whether the unit has a store.
			opts.Logger.Infof("gave the bound sockets %s to systemd's file descriptor store: the next start after a restart takes them back if the unit sets FileDescriptorStoreMax=", strings.Join(stored, ", "))
		}
	}
}

// checkStored refuses a start whose sockets came back from the file
// descriptor store on an address other than the one now configured (the
// --listen address was changed before a restart): it removes those from
// the store (FDSTOREREMOVE=1) and returns an error saying so, so that the
// next start binds the new address and stores that. Without the check the
// service would go on serving the old address. Addresses that are not a
// literal IP and port or a path (a host name, port 0) are not compared.
// It runs only with Options.FDStore, which says that no .socket unit
// passes these names: passed sockets then all come from the store.
func checkStored(ctx context.Context, opts Options, notifier *systemd.Notifier, set *activation.Set, specs []activation.Spec) error {
	if notifier == nil || set.Source() != activation.Systemd || !opts.FDStore {
		return nil
	}
	var errs []error
	for _, sp := range specs {
		var got []net.Addr
		for _, l := range set.Listeners(sp.Name) {
			got = append(got, l.Addr())
		}
		for _, pc := range set.PacketConns(sp.Name) {
			got = append(got, pc.LocalAddr())
		}
		for _, a := range got {
			if sameAddress(sp.Address, a) {
				continue
			}
			if err := notifier.RemoveStored(sp.Name); err != nil {
				errs = append(errs, err)
			}
			errs = append(errs, fmt.Errorf("baton: socket %q: systemd passed %s back from the file descriptor store, but the address is now %s: removed it from the store; the next start binds %s", sp.Name, a, sp.Address, sp.Address))
			break
		}
	}
	if len(errs) == 0 {
		return nil
	}
	// systemd has taken the removal in before this process exits.
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := notifier.Barrier(bctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sameAddress reports whether the listener address got is the configured
// address want, or whether want cannot be compared (not a literal IP and
// port, nor a path).
func sameAddress(want string, got net.Addr) bool {
	if want == "" {
		return true
	}
	if strings.HasPrefix(want, "/") || strings.HasPrefix(want, "@") {
		return got.String() == want || strings.TrimPrefix(got.String(), "@") == strings.TrimPrefix(want, "@")
	}
	host, port, err := net.SplitHostPort(want)
	if err != nil || port == "0" {
		return true
	}
	ip := net.ParseIP(host)
	if host != "" && ip == nil {
		return true // a name: resolved at bind time, not compared
	}
	gh, gp, err := net.SplitHostPort(got.String())
	if err != nil {
		return true
	}
	if gp != port {
		return false
	}
	if host == "" {
		return true
	}
	return ip.Equal(net.ParseIP(gh))
}
