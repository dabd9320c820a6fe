package config

import (
	"io"
	"strings"
	"testing"
)

func TestSecurityFlags(t *testing.T) {
	c, err := Load([]string{"--model=m", "--tls-cert=c.pem", "--tls-key=k.pem", "--tls-client-ca=ca.pem",
		"--auth-tokens=tokens", "--listen=0.0.0.0:50051"}, env(map[string]string{"RANKER_REFLECTION": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.TLSCert, c.TLSKey, c.TLSClientCA, c.AuthTokens, c.Reflection}
	want := []any{"c.pem", "k.pem", "ca.pem", "tokens", true}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if d, err := Load([]string{"--model=m"}, env(nil), io.Discard); err != nil || d.Reflection || d.TLSCert != "" || d.AuthTokens != "" {
		t.Errorf("defaults: got reflection %v, tls-cert %q, auth-tokens %q (%v), want all off", d.Reflection, d.TLSCert, d.AuthTokens, err)
	}
}

// Tokens over plaintext are refused unless the listener is loopback only.
func TestTokensInClearOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		listen string
		tls    bool
		wantOK bool
	}{
		{"127.0.0.1:50051", false, true},
		{"localhost:50051", false, true},
		{"[::1]:50051", false, true},
		{"0.0.0.0:50051", false, false},
		{":50051", false, false},
		{"10.0.0.7:50051", false, false},
		{"[::]:50051", false, false},
		{"0.0.0.0:50051", true, true},
	}
	for _, tt := range tests {
		args := []string{"--model=m", "--auth-tokens=tokens", "--listen=" + tt.listen}
		if tt.tls {
			args = append(args, "--tls-cert=c.pem", "--tls-key=k.pem")
		}
		_, err := Load(args, env(nil), io.Discard)
		if (err == nil) != tt.wantOK {
			t.Errorf("listen %s, tls %v: got %v, want ok %v", tt.listen, tt.tls, err, tt.wantOK)
		}
		if err != nil && !strings.Contains(err.Error(), "auth-tokens: tokens would travel in clear to "+tt.listen) {
			t.Errorf("listen %s: got %v, want the flag and the address named", tt.listen, err)
		}
	}
}
