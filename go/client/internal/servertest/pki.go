package servertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a certificate authority made for one test, a server certificate
// for 127.0.0.1 and a client certificate, as PEM files and bytes, so every
// certificate the tests use is real and none is committed.
type PKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey []byte
	Dir                                              string
}

// ClientName is the common name of the client certificate, the identity a
// tokens file lists as `cert:<name>`.
const ClientName = "backend-client"

// NewPKI makes the certificates and writes them to a temporary directory as
// ca.pem, server.pem, server-key.pem, client.pem and client-key.pem.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	caKey := newKey(t)
	caTemplate := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ranker test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{CA: pemBlock("CERTIFICATE", caDER), Dir: t.TempDir()}
	issue := func(serial int64, name string, server bool) (certPEM, keyPEM []byte) {
		key := newKey(t)
		template := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			template.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			template.DNSNames = []string{"localhost"}
			template.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, template, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER)
	}
	p.ServerCert, p.ServerKey = issue(2, "ranker", true)
	p.ClientCert, p.ClientKey = issue(3, ClientName, false)
	for name, data := range map[string][]byte{"ca.pem": p.CA, "server.pem": p.ServerCert, "server-key.pem": p.ServerKey,
		"client.pem": p.ClientCert, "client-key.pem": p.ClientKey} {
		if err := os.WriteFile(p.Path(name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// Path is the file of one of the PKI's PEMs, by name.
func (p *PKI) Path(name string) string { return filepath.Join(p.Dir, name) }

// TokensFile writes a --auth-tokens file of lines `name roles credential`
// given as name -> roles and token (or "cert:<identity>").
func TokensFile(t testing.TB, callers map[string][2]string) string {
	t.Helper()
	var lines []byte
	for name, c := range callers {
		roles, credential := c[0], c[1]
		if len(credential) < 5 || credential[:5] != "cert:" {
			sum := sha256.Sum256([]byte(credential))
			credential = "sha256:" + hex.EncodeToString(sum[:])
		}
		lines = append(lines, []byte(name+" "+roles+" "+credential+"\n")...)
	}
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, lines, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
