package baton

import (
	_ "embed"
	"strings"
)

//go:embed VERSION
var versionFile string

// Version is the release version of this module, read from the VERSION file
// at the top of the repository. It is the single source of the version that
// `webapp version` prints and that the packages are built with.
func Version() string { return strings.TrimSpace(versionFile) }
