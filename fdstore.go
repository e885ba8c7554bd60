package baton

import (
	"os"
	"strings"

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
	byName := map[string][]*os.File{}
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
		opts.Logger.Infof("stored the bound sockets %s in systemd's file descriptor store: the next start after a restart takes them back", strings.Join(stored, ", "))
	}
}
