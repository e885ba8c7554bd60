package upgrade

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// A process the hand-over variables do not address takes nothing, and
// finds them all unset afterwards.
func TestInheritNotAddressed(t *testing.T) {
	for _, env := range []map[string]string{
		{envUpgradeFD: "", envFiles: "tls.crt", envFilesFD: "8"},
		{envUpgradeFD: "7", envParent: "1", envFiles: "tls.crt", envFilesFD: "8", envConnsFD: "9"},
	} {
		for k, v := range env {
			t.Setenv(k, v)
		}
		if h, err := inherit(); h != nil || !errors.Is(err, ErrNotInherited) {
			t.Errorf("inherit() with %v = %v, %v; want ErrNotInherited", env, h, err)
		}
		for _, k := range []string{envUpgradeFD, envControlFD, envParent, envPID, envFiles, envFilesFD, envConnsFD} {
			if v, ok := os.LookupEnv(k); ok {
				t.Errorf("%s=%q after inherit, want it unset", k, v)
			}
		}
	}
}

func TestInheritedFiles(t *testing.T) {
	const hs, ctl = 9, 10
	tests := []struct {
		names, fd string
		want      []string
		first     int
		wantErr   string
	}{
		{"", "", nil, -1, ""},
		{"tls.crt:tls.key", "4", []string{"tls.crt", "tls.key"}, 4, ""},
		{"a", "11", []string{"a"}, 11, ""},
		{"a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p", "11", strings.Split("a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p", ":"), 11, ""},
		{"tls.crt", "", nil, -1, "BATON_FILES=\"tls.crt\" without BATON_FILES_FD"},
		{"", "4", nil, -1, "BATON_FILES_FD=\"4\" without BATON_FILES"},
		{"a:b:c:d:e:f:g:h:i:j:k:l:m:n:o:p:q", "11", nil, -1, "17 files: at most 16"},
		{"a:a", "4", nil, -1, "given twice"},
		{"a:", "4", nil, -1, "want 1 to 255 characters"},
		{"a b", "4", nil, -1, "without ':' or space"},
		{"a", "2", nil, -1, "want a descriptor number of at least 3"},
		{"a", "+4", nil, -1, "want a descriptor number of at least 3"},
		{"a", "04", nil, -1, "want a descriptor number of at least 3"},
		{"a:b", "8", nil, -1, "takes the descriptor of BATON_UPGRADE_FD"},
		{"a", "10", nil, -1, "takes the descriptor of BATON_CONTROL_FD"},
		{"a:b", "2147483647", nil, -1, "do not fit"},
	}
	for _, tt := range tests {
		env := map[string]string{envFiles: tt.names, envFilesFD: tt.fd}
		lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
		names, first, err := inheritedFiles(lookup, hs, ctl)
		switch {
		case tt.wantErr == "" && (err != nil || !slices.Equal(names, tt.want) || first != tt.first):
			t.Errorf("inheritedFiles(%q, %q) = %q, %d, %v; want %q, %d", tt.names, tt.fd, names, first, err, tt.want, tt.first)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || names != nil || first != -1):
			t.Errorf("inheritedFiles(%q, %q) = %q, %d, %v; want an error with %q", tt.names, tt.fd, names, first, err, tt.wantErr)
		}
	}
}
