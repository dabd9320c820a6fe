package auth

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"
)

// loadKeyPair reads a PEM certificate chain and its private key, refusing a
// pair that does not match or a leaf that is expired or not yet valid (it
// would fail every handshake).
func loadKeyPair(certFile, keyFile string, now time.Time) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls-cert %s, tls-key %s: %w", certFile, keyFile, err)
	}
	leaf := pair.Leaf // parsed by LoadX509KeyPair
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("tls-cert %s: valid from %s to %s, not now", certFile,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return &pair, nil
}

// loadCAPool reads a PEM bundle of CA certificates. Unlike
// CertPool.AppendCertsFromPEM, which skips what it cannot parse, any block
// that is not a valid certificate is an error naming it.
func loadCAPool(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		n++
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("tls-client-ca %s: PEM block %d is %q, want CERTIFICATE", file, n, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tls-client-ca %s: certificate %d: %w", file, n, err)
		}
		pool.AddCert(cert)
	}
	if n == 0 {
		return nil, errors.New("tls-client-ca " + file + ": no PEM certificate")
	}
	return pool, nil
}

// serverTLS is a TLS configuration whose certificate, and client CAs when
// clientCAs is not nil, are read from their reloaders at each handshake, so
// a new connection sees rotated files without a restart.
func serverTLS(pair *reloader[*tls.Certificate], clientCAs *reloader[*x509.CertPool]) *tls.Config {
	perHandshake := func() *tls.Config {
		c := &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair.Get(), nil },
		}
		if clientCAs != nil {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = clientCAs.Get()
		}
		return c
	}
	c := perHandshake()
	if clientCAs != nil {
		c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return perHandshake(), nil }
	}
	return c
}

// certificateIdentities are the names a verified client certificate may be
// listed under in the tokens file: its URI SANs (SPIFFE IDs, for one) and its
// common name.
func certificateIdentities(cert *x509.Certificate) []string {
	var ids []string
	for _, u := range cert.URIs {
		ids = append(ids, u.String())
	}
	if cert.Subject.CommonName != "" {
		ids = append(ids, cert.Subject.CommonName)
	}
	return ids
}
