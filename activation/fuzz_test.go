package activation

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseEnv sets both protocols' variables to anything (each present
// when its bit of set is): parseEnv never panics, claims descriptors only
// for a process the variables address, never more than maxFDs of them nor
// any below 3, and returns either an *EnvError wrapping ErrBadEnvironment
// or one name per descriptor, as the variables say.
func FuzzParseEnv(f *testing.F) {
	const pid, ppid = 100, 50
	// Seeds: the values of TestParseEnv, in envVars order.
	seeds := []struct {
		set  uint8
		vals [8]string
	}{
		{0, [8]string{}},
		{0b111, [8]string{"100", "1", "http"}},
		{0b111, [8]string{"100", "2", "http:admin"}},
		{0b011, [8]string{"100", "2"}},
		{0b111, [8]string{"100", "2", "http:"}},
		{0b111, [8]string{"101", "1", "http"}},
		{0b111, [8]string{"100", "2147483645", ""}},
		{0b111, [8]string{"100", "65537", ""}},
		{0b111, [8]string{"100", "-1", ""}},
		{0b111, [8]string{"+100", "01", "http"}},
		{0b11111000, [8]string{"", "", "", "50", "", "2", "http:admin", "5"}},
		{0b11110000, [8]string{"", "", "", "", "100", "1", "http", "2"}},
		{0b11111000, [8]string{"", "", "", "50", "", "1", "http", "2147483647"}},
		{0b01111000, [8]string{"", "", "", "50", "x", "1", "http"}},
		{0b11111111, [8]string{"100", "1", "http", "50", "100", "1", "http", "4"}},
	}
	for _, s := range seeds {
		v := s.vals
		f.Add(s.set, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
	}
	f.Fuzz(func(t *testing.T, set uint8, v0, v1, v2, v3, v4, v5, v6, v7 string) {
		vals := [8]string{v0, v1, v2, v3, v4, v5, v6, v7}
		env := map[string]string{}
		for i, k := range envVars {
			if set&(1<<i) != 0 {
				env[k] = vals[i]
			}
		}
		lookup := func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}
		p, claimed, err := parseEnv(lookup, pid, ppid)

		// Who the variables address, by an independent reading.
		isNum := func(k string, want int) bool {
			v, ok := env[k]
			if !ok {
				return false
			}
			n, err := strconv.ParseInt(v, 10, 64)
			return err == nil && n == int64(want)
		}
		forSystemd := isNum(envPID, pid)
		forInherited := isNum(envInhPID, pid) || isNum(envParent, ppid)

		addressed := 0
		for _, b := range []bool{forSystemd, forInherited} {
			if b {
				addressed++
			}
		}
		if len(claimed) > addressed {
			t.Errorf("parseEnv(%q) claimed %v, more ranges than protocols that address this process", env, claimed)
		}
		for _, r := range claimed {
			if r.first < listenFDsStart || r.n < 1 || r.n > maxFDs || r.first > 1<<31-1-r.n+1 {
				t.Errorf("parseEnv(%q) claimed %v, want fds from 3 on, at most %d of them", env, r, maxFDs)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrBadEnvironment) {
				t.Errorf("parseEnv(%q) error = %v, want ErrBadEnvironment", env, err)
			}
			var ee *EnvError
			if !errors.As(err, &ee) || ee.Var == "" || !strings.HasPrefix(err.Error(), "activation: ") {
				t.Errorf("parseEnv(%q) error = %v, want an *EnvError naming its variable", env, err)
			}
			return
		}
		if len(claimed) != 0 {
			t.Errorf("parseEnv(%q) = %v with claimed %v and no error, want no claim", env, p, claimed)
		}
		countVar, namesVar := envFDs, envNames
		switch p.source {
		case Bound:
			if p.names != nil || p.first != 0 {
				t.Errorf("parseEnv(%q) = %+v, want nothing passed", env, p)
			}
			return
		case Systemd:
			if !forSystemd || p.first != listenFDsStart {
				t.Errorf("parseEnv(%q) = %+v, want systemd's only for LISTEN_PID=%d, from fd 3", env, p, pid)
			}
		case Inherited:
			countVar, namesVar = envInhFDs, envInhNames
			if !forInherited || p.first < listenFDsStart || !p.namesSet {
				t.Errorf("parseEnv(%q) = %+v, want inherited ones only for this process or its child, from fd 3 on, named", env, p)
			}
		default:
			t.Fatalf("parseEnv(%q) source = %v", env, p.source)
		}
		n, err := strconv.Atoi(env[countVar])
		if err != nil || n != len(p.names) || n < 1 || n > maxFDs {
			t.Errorf("parseEnv(%q) = %d names for %s=%q", env, len(p.names), countVar, env[countVar])
		}
		if p.namesVar != namesVar {
			t.Errorf("parseEnv(%q) names from %s, want %s", env, p.namesVar, namesVar)
		}
		if p.namesSet {
			if got := strings.Join(p.names, ":"); got != env[namesVar] {
				t.Errorf("parseEnv(%q) names %q, want those of %s", env, p.names, namesVar)
			}
		} else {
			for _, name := range p.names {
				if name != unknownName {
					t.Errorf("parseEnv(%q) names %q without %s, want all %q", env, p.names, envNames, unknownName)
				}
			}
		}
		for _, name := range p.names {
			if strings.Contains(name, ":") {
				t.Errorf("parseEnv(%q) name %q holds the separator", env, name)
			}
		}
	})
}
