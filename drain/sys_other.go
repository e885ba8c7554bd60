//go:build !unix

package drain

// temporary reports no error as temporary: net/http's Serve retries
// those it knows itself.
func temporary(error) bool { return false }
