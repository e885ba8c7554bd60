package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The names of the https server's certificate and key: as the files in
// /etc/webapp and those `webapp reload` hands over; and as credentials,
// which webapp.service loads from the whole directory
// (LoadCredential=tls:/etc/webapp names each file tls_<file>).
const (
	certName     = "tls.crt"
	keyName      = "tls.key"
	certCredName = "tls_" + certName
	keyCredName  = "tls_" + keyName
)

// Where the certificate and key are when no flag says otherwise.
const (
	defaultCertFile = "/etc/webapp/" + certName
	defaultKeyFile  = "/etc/webapp/" + keyName
)

// maxPEM bounds what is read of a certificate or key file.
const maxPEM = 1 << 20

// pemFile is a certificate or key file: its name in messages, and its
// contents if it is there.
type pemFile struct {
	name string
	data []byte
	ok   bool // there (and read)
}

// certificate is the https server's certificate, loaded, and where from.
type certificate struct {
	cert *tls.Certificate
	from string // for the log
}

// loadCertificate finds the https server's certificate and key in the
// first of these places that holds either file:
//
//  1. the files a reload handed over (`webapp reload`, run as root by
//     ExecReload=+, reads the current ones), named tls.crt and tls.key;
//  2. $CREDENTIALS_DIRECTORY/tls_tls.crt and tls_tls.key
//     (LoadCredential=tls:/etc/webapp, copied by systemd when the service
//     started);
//  3. the files --tls-cert and --tls-key name.
//
// A place that holds one file must hold both, readable, and they must make
// a pair: else the error names the file and what is wrong with it, and the
// service does not start. When no place holds either, loadCertificate
// returns nil and why.
func loadCertificate(certFile, keyFile string) (*certificate, string, error) {
	handed, err := handedOverFiles()
	if err != nil {
		return nil, "", err
	}
	defer func() {
		for _, f := range handed {
			f.Close()
		}
	}()
	cert, key, err := readHandedOver(handed)
	if err != nil || cert.ok || key.ok {
		return pair(cert, key, "files handed over by the reload", err)
	}
	var looked []string
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		c, k := filepath.Join(dir, certCredName), filepath.Join(dir, keyCredName)
		cert, key, err := readFiles(c, k)
		if err != nil || cert.ok || key.ok {
			return pair(cert, key, "$CREDENTIALS_DIRECTORY "+dir, err)
		}
		looked = append(looked, c, k)
	}
	cert, key, err = readFiles(certFile, keyFile)
	if err != nil || cert.ok || key.ok {
		return pair(cert, key, certFile, err)
	}
	looked = append(looked, certFile, keyFile)
	return nil, fmt.Sprintf("no TLS certificate: none of %s exists (see webapp serve -h)", strings.Join(looked, ", ")), nil
}

// pair makes a certificate of the files read, or says what is wrong.
func pair(cert, key pemFile, from string, err error) (*certificate, string, error) {
	if err != nil {
		return nil, "", err
	}
	c, err := parsePair(cert, key)
	if err != nil {
		return nil, "", err
	}
	return &certificate{cert: c, from: from}, "", nil
}

// readFiles reads the certificate and key files at these paths. A file
// that does not exist is not an error here (pemFile.ok is false); one that
// cannot be read is.
func readFiles(certPath, keyPath string) (cert, key pemFile, err error) {
	read := func(path string) (pemFile, error) {
		p := pemFile{name: path}
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			return p, nil
		}
		if err != nil {
			return p, fmt.Errorf("TLS file %s: %w", path, unwrapPath(err))
		}
		defer f.Close()
		p.data, err = readPEM(f, path)
		p.ok = err == nil
		return p, err
	}
	if cert, err = read(certPath); err != nil {
		return cert, key, err
	}
	key, err = read(keyPath)
	return cert, key, err
}

// readHandedOver reads the handed-over files named tls.crt and tls.key.
func readHandedOver(files map[string]*os.File) (cert, key pemFile, err error) {
	cert = pemFile{name: certName + " handed over by the reload"}
	key = pemFile{name: keyName + " handed over by the reload"}
	for _, p := range []struct {
		name string
		file *pemFile
	}{{certName, &cert}, {keyName, &key}} {
		f := files[p.name]
		if f == nil {
			continue
		}
		if p.file.data, err = readPEM(f, p.file.name); err != nil {
			return cert, key, err
		}
		p.file.ok = true
	}
	return cert, key, nil
}

// readPEM reads a certificate or key file from its start (a handed-over
// descriptor may be anywhere) up to maxPEM bytes.
func readPEM(f io.ReaderAt, name string) ([]byte, error) {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, maxPEM+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("TLS file %s: %w", name, unwrapPath(err))
	case len(b) > maxPEM:
		return nil, fmt.Errorf("TLS file %s: larger than %d bytes: not a PEM certificate or key", name, maxPEM)
	}
	return b, nil
}

// unwrapPath drops the path an *fs.PathError repeats.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// parsePair parses a certificate and its key, both present, into a
// certificate for tls.Config. Every error names the file at fault.
func parsePair(cert, key pemFile) (*tls.Certificate, error) {
	switch {
	case !cert.ok:
		return nil, fmt.Errorf("TLS certificate %s not found, but its key %s is there: both or neither", cert.name, key.name)
	case !key.ok:
		return nil, fmt.Errorf("TLS key %s not found, but its certificate %s is there: both or neither", key.name, cert.name)
	}
	// Say which file is garbled before asking whether they match.
	rest, n := cert.data, 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %w", cert.name, err)
		}
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("TLS certificate %s: no PEM CERTIFICATE block in it", cert.name)
	}
	if b, _ := pem.Decode(key.data); b == nil {
		return nil, fmt.Errorf("TLS key %s: no PEM block in it", key.name)
	}
	c, err := tls.X509KeyPair(cert.data, key.data)
	if err != nil {
		return nil, fmt.Errorf("TLS key %s with certificate %s: %s", key.name, cert.name, strings.TrimPrefix(err.Error(), "tls: "))
	}
	return &c, nil
}

// describe says what the certificate is, for the log, and warns when it
// is not valid now.
func (c *certificate) describe(now time.Time) (what string, warning string) {
	leaf := c.cert.Leaf
	if leaf == nil {
		return "TLS certificate from " + c.from, ""
	}
	names := leaf.DNSNames
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && leaf.Subject.CommonName != "" {
		names = []string{leaf.Subject.CommonName}
	}
	what = fmt.Sprintf("TLS certificate for %s from %s, valid until %s", strings.Join(names, ", "), c.from, leaf.NotAfter.UTC().Format(time.RFC3339))
	switch {
	case now.After(leaf.NotAfter):
		warning = fmt.Sprintf("TLS certificate from %s expired at %s: clients will refuse it", c.from, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		warning = fmt.Sprintf("TLS certificate from %s is not valid before %s: clients will refuse it", c.from, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return what, warning
}

// tlsConfig serves the certificate with TLS 1.2 at least; baton offers
// h2 and http/1.1 by ALPN.
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{*c.cert}, MinVersion: tls.VersionTLS12}
}
