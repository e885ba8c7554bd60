package bench

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/baton-dev/baton/internal/testcert"
)

// testCertificate returns a self-signed PEM certificate for 127.0.0.1,
// valid for a day, and its PEM key. h2load does not verify certificates,
// and the benchmark's own TLS check asks only that HTTP/2 is served.
func testCertificate(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	c := testcert.New(t, "baton bench")
	return c.CertPEM, c.KeyPEM
}

// writeTestCertificate writes a test certificate as tls.crt and tls.key
// (0600) into a new temporary directory and returns their paths.
func writeTestCertificate(t testing.TB) (certPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	c, k := testCertificate(t)
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certPath, c, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}
