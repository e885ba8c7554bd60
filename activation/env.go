package activation

import (
	"math"
	"strconv"
	"strings"
)

// The environment of the two protocols. See the package documentation.
const (
	envPID   = "LISTEN_PID"
	envFDs   = "LISTEN_FDS"
	envNames = "LISTEN_FDNAMES"

	envParent     = "BATON_LISTEN_PARENT"
	envInhPID     = "BATON_LISTEN_PID"
	envInhFDs     = "BATON_LISTEN_FDS"
	envInhNames   = "BATON_LISTEN_FDNAMES"
	envInhFDStart = "BATON_LISTEN_FDS_START"
)

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

// unknownName is the name sd_listen_fds_with_names(3) gives every descriptor
// when LISTEN_FDNAMES is not set.
const unknownName = "unknown"

// envVars are the variables Listen reads and then unsets.
var envVars = [...]string{envPID, envFDs, envNames, envParent, envInhPID, envInhFDs, envInhNames, envInhFDStart}

// fdRange is a run of descriptors first, first+1, ..., first+n-1.
type fdRange struct {
	first, n int
}

// passed describes the descriptors handed to this process.
type passed struct {
	source   Source   // Bound when nothing was passed to this process
	first    int      // number of the first descriptor
	names    []string // one name per descriptor
	namesVar string   // the variable the names came from, for messages
	namesSet bool     // false when LISTEN_FDNAMES was absent
}

func (p passed) fds() fdRange { return fdRange{first: p.first, n: len(p.names)} }

// parseEnv reads both protocols' variables through lookup (os.LookupEnv in
// Listen) for a process with the given pid and parent pid. It does not touch
// the environment or any descriptor.
//
// It returns what was passed to this process (source Bound if nothing), or
// an error wrapping ErrBadEnvironment. With the error come the descriptor
// ranges the environment claims for this process as far as they are known,
// so that the caller can mark them close-on-exec as sd_listen_fds(3) does.
func parseEnv(lookup func(string) (string, bool), pid, ppid int) (passed, []fdRange, error) {
	sd, sdClaim, sdErr := parseSystemd(lookup, pid)
	inh, inhClaim, inhErr := parseInherited(lookup, pid, ppid)
	var claimed []fdRange
	for _, r := range []fdRange{sdClaim, inhClaim} {
		if r.n > 0 {
			claimed = append(claimed, r)
		}
	}
	switch {
	case sdErr != nil && inhErr != nil:
		return passed{}, claimed, joinErrors(sdErr, inhErr)
	case sdErr != nil:
		return passed{}, claimed, sdErr
	case inhErr != nil:
		return passed{}, claimed, inhErr
	case sd.source != Bound && inh.source != Bound:
		v, _ := lookup(envParent)
		return passed{}, claimed, badEnv(envParent, v,
			"%s also names this process: descriptors from the service manager and from a previous generation at once", envPID)
	case sd.source != Bound:
		return sd, nil, nil
	default:
		return inh, nil, nil
	}
}

// parseSystemd follows sd_listen_fds(3): LISTEN_PID absent or naming another
// process means nothing was passed; LISTEN_FDS absent too. LISTEN_FDNAMES
// absent means every descriptor is named "unknown", as
// sd_listen_fds_with_names(3) does.
func parseSystemd(lookup func(string) (string, bool), pid int) (passed, fdRange, error) {
	v, ok := lookup(envPID)
	if !ok {
		return passed{}, fdRange{}, nil
	}
	got, err := parsePID(envPID, v)
	if err != nil {
		return passed{}, fdRange{}, err
	}
	if got != pid {
		return passed{}, fdRange{}, nil
	}
	v, ok = lookup(envFDs)
	if !ok {
		return passed{}, fdRange{}, nil
	}
	n, err := parseCount(envFDs, v, listenFDsStart)
	if err != nil {
		return passed{}, fdRange{}, err
	}
	p := passed{source: Systemd, first: listenFDsStart, namesVar: envNames}
	claim := fdRange{first: listenFDsStart, n: n}
	v, ok = lookup(envNames)
	if !ok {
		p.names = make([]string, n)
		for i := range p.names {
			p.names[i] = unknownName
		}
		return p, claim, nil
	}
	p.namesSet = true
	if p.names, err = parseNames(envNames, v, envFDs, n); err != nil {
		return passed{}, claim, err
	}
	return p, claim, nil
}

// parseInherited reads the private protocol Set.Export writes. The
// descriptors are ours when BATON_LISTEN_PARENT names our parent, or when
// BATON_LISTEN_PID names this very process (set by a starter that knows
// the pid, such as a shell that sets it to $$ and then execs us). Like
// LISTEN_PID, neither naming us means nothing was passed; unlike
// LISTEN_FDNAMES, BATON_LISTEN_FDNAMES is required.
func parseInherited(lookup func(string) (string, bool), pid, ppid int) (passed, fdRange, error) {
	addressed := false
	for _, a := range []struct {
		name string
		want int
	}{{envInhPID, pid}, {envParent, ppid}} {
		v, ok := lookup(a.name)
		if !ok {
			continue
		}
		got, err := parsePID(a.name, v)
		if err != nil {
			return passed{}, fdRange{}, err
		}
		if got == a.want {
			addressed = true
		}
	}
	if !addressed {
		return passed{}, fdRange{}, nil
	}
	var err error
	first := listenFDsStart
	if v, ok := lookup(envInhFDStart); ok {
		first, err = strconv.Atoi(v)
		if err != nil {
			return passed{}, fdRange{}, badEnv(envInhFDStart, v, "not a number")
		}
		if first < listenFDsStart || first > math.MaxInt32 {
			return passed{}, fdRange{}, badEnv(envInhFDStart, v, "not a descriptor above stderr")
		}
	}
	v, ok := lookup(envInhFDs)
	if !ok {
		return passed{}, fdRange{}, badEnv(envInhFDs, v, "not set although %s names our parent", envParent)
	}
	n, err := parseCount(envInhFDs, v, first)
	if err != nil {
		return passed{}, fdRange{}, err
	}
	p := passed{source: Inherited, first: first, namesVar: envInhNames, namesSet: true}
	claim := fdRange{first: first, n: n}
	v, ok = lookup(envInhNames)
	if !ok {
		return passed{}, claim, badEnv(envInhNames, v, "not set although %s=%d", envInhFDs, n)
	}
	if p.names, err = parseNames(envInhNames, v, envInhFDs, n); err != nil {
		return passed{}, claim, err
	}
	return p, claim, nil
}

func parsePID(name, v string) (int, error) {
	pid, err := strconv.Atoi(v)
	if err != nil || pid <= 0 {
		return 0, badEnv(name, v, "not a process id")
	}
	return pid, nil
}

// maxFDs bounds a descriptor count. Every descriptor of the claimed range
// is probed and, on error, marked close-on-exec one by one: a count near
// 2^31 would hold Listen up for many minutes. No service is passed more
// listening sockets than this.
const maxFDs = 1 << 16

// parseCount parses a descriptor count. Like sd_listen_fds(3) it refuses
// zero: a process that is passed nothing is not given the variables.
func parseCount(name, v string, first int) (int, error) {
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		return 0, badEnv(name, v, "not a number")
	case n < 0:
		return 0, badEnv(name, v, "negative")
	case n == 0:
		return 0, badEnv(name, v, "zero descriptors")
	case n > maxFDs:
		return 0, badEnv(name, v, "too many descriptors (at most %d)", maxFDs)
	case n > math.MaxInt32-first:
		return 0, badEnv(name, v, "too many descriptors from fd %d on", first)
	}
	return n, nil
}

// parseNames splits a colon-separated name list and checks that it names n
// descriptors.
func parseNames(name, v, countVar string, n int) ([]string, error) {
	var names []string
	if v != "" {
		names = strings.Split(v, ":")
	}
	if len(names) != n {
		return nil, badEnv(name, v, "%d names for %s=%d", len(names), countVar, n)
	}
	return names, nil
}
