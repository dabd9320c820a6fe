package auth

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// Role is a set of methods a caller may call (see methodRoles).
type Role string

// The roles, one per kind of caller: backends rank, the frontend and the
// catalog ingest, operators and tools read model info.
const (
	RoleRank   Role = "rank"
	RoleIngest Role = "ingest"
	RoleInfo   Role = "info"
)

var knownRoles = []Role{RoleRank, RoleIngest, RoleInfo}

// Caller is one line of the tokens file: who calls and what it may do.
type Caller struct {
	Name  string
	Roles []Role
}

// Has reports whether the caller holds role r.
func (c *Caller) Has(r Role) bool { return slices.Contains(c.Roles, r) }

// Tokens are the callers of a tokens file, found by the SHA-256 of their
// bearer token or by the identity in their client certificate. The file
// holds hashes, never tokens, so reading it (or a backup of it) gives no
// one a way in.
type Tokens struct {
	hashed []hashedToken
	certs  map[string]*Caller
}

type hashedToken struct {
	sum    [sha256.Size]byte
	caller *Caller
}

const (
	tokenPrefix = "sha256:"
	certPrefix  = "cert:"
)

// LoadTokens reads a tokens file (see ParseTokens).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth-tokens: %w", err)
	}
	defer func() { _ = f.Close() }() // read only
	return ParseTokens(f, path)
}

// ParseTokens reads one caller per line, `name role[,role...] credential`,
// where the credential is `sha256:<64 hex digits>`, the SHA-256 of the
// caller's bearer token, or `cert:<identity>`, the common name or a URI SAN
// of its client certificate (verified by mutual TLS). Blank lines and lines
// starting with # are skipped. Errors name the file and the line.
func ParseTokens(r io.Reader, file string) (*Tokens, error) {
	t := &Tokens{certs: map[string]*Caller{}}
	names := map[string]int{}
	hashes := map[[sha256.Size]byte]int{}
	certLines := map[string]int{}
	scanner := bufio.NewScanner(r)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("auth-tokens %s:%d: %s", file, n, fmt.Sprintf(format, args...))
		}
		fields := strings.Fields(line)
		if len(fields) != 3 {
			return nil, bad("%d fields, want 3: name role[,role...] sha256:<hex>|cert:<identity>", len(fields))
		}
		caller := &Caller{Name: fields[0]}
		if first, dup := names[caller.Name]; dup {
			return nil, bad("caller %q already on line %d", caller.Name, first)
		}
		names[caller.Name] = n
		for _, r := range strings.Split(fields[1], ",") {
			role := Role(r)
			if !slices.Contains(knownRoles, role) {
				return nil, bad("role %q, want some of %v", truncate(r), knownRoles)
			}
			if !caller.Has(role) {
				caller.Roles = append(caller.Roles, role)
			}
		}
		switch credential := fields[2]; {
		case strings.HasPrefix(credential, tokenPrefix):
			digits := strings.TrimPrefix(credential, tokenPrefix)
			var sum [sha256.Size]byte
			if len(digits) != hex.EncodedLen(sha256.Size) {
				return nil, bad("sha256 has %d hex digits, want %d (store the hash of the token, never the token)", len(digits), hex.EncodedLen(sha256.Size))
			}
			if _, err := hex.Decode(sum[:], []byte(digits)); err != nil {
				return nil, bad("sha256: %v", err)
			}
			if first, dup := hashes[sum]; dup {
				return nil, bad("the same token as line %d", first)
			}
			hashes[sum] = n
			t.hashed = append(t.hashed, hashedToken{sum: sum, caller: caller})
		case strings.HasPrefix(credential, certPrefix):
			id := strings.TrimPrefix(credential, certPrefix)
			if id == "" {
				return nil, bad("empty certificate identity")
			}
			if first, dup := certLines[id]; dup {
				return nil, bad("certificate identity %q already on line %d", truncate(id), first)
			}
			certLines[id] = n
			t.certs[id] = caller
		default:
			return nil, bad("credential must start with %q or %q", tokenPrefix, certPrefix)
		}
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("auth-tokens %s: %w", file, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("auth-tokens %s: no callers; every call would be refused", file)
	}
	return t, nil
}

// ByToken finds the caller whose token this is. Every stored hash is
// compared, in constant time, so the time taken says nothing about how close
// a guess came or which line it matched.
func (t *Tokens) ByToken(token string) (*Caller, bool) {
	sum := sha256.Sum256([]byte(token))
	var found *Caller
	for _, h := range t.hashed {
		if subtle.ConstantTimeCompare(sum[:], h.sum[:]) == 1 {
			found = h.caller
		}
	}
	return found, found != nil
}

// ByCertificate finds the caller named by any of a verified certificate's
// identities (its common name and URI SANs).
func (t *Tokens) ByCertificate(identities []string) (*Caller, bool) {
	for _, id := range identities {
		if c, ok := t.certs[id]; ok {
			return c, true
		}
	}
	return nil, false
}

// HashToken is what a tokens file stores for a token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return tokenPrefix + hex.EncodeToString(sum[:])
}

// truncate bounds a string quoted back in an error or a log line.
func truncate(s string) string {
	const most = 64
	if len(s) <= most {
		return s
	}
	return s[:most] + "..."
}
