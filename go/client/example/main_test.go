package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"ranker.internal/client"
	"ranker.internal/client/internal/servertest"
)

func TestExample(t *testing.T) {
	pki := servertest.NewPKI(t)
	tokens := servertest.TokensFile(t, map[string][2]string{"backend": {"rank", "example-token"}})
	server := servertest.Start(t, "--tls-cert="+pki.Path("server.pem"), "--tls-key="+pki.Path("server-key.pem"), "--auth-tokens="+tokens)
	tlsArgs := []string{"-target", server.Target, "-ca", pki.Path("ca.pem"), "-token", "example-token"}

	var out bytes.Buffer
	if err := run(context.Background(), append(tlsArgs, "-user", "reader-17", "-top-k", "2", "a1", "a2", "a3"), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || lines[0] != "model "+servertest.ModelName+"/"+servertest.ModelVersion ||
		!strings.HasPrefix(lines[1], "1 a") || !strings.HasPrefix(lines[2], "2 a") {
		t.Errorf("output:\n%s\nwant the model line and two ranked ids", out.String())
	}

	out.Reset()
	err := run(context.Background(), append(tlsArgs, "a1", "a1"), &out)
	if e, ok := client.AsError(err); !ok || len(e.Violations) != 1 {
		t.Fatalf("got %v, want a *client.Error with one violation", err)
	}
	if want := "refused candidates[1].id: "; !strings.HasPrefix(out.String(), want) {
		t.Errorf("output %q, want it to start with %q", out.String(), want)
	}
}
