package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	"ranker.internal/client"
	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker.internal/client/internal/servertest"
)

func TestExample(t *testing.T) {
	pki := servertest.NewPKI(t)
	tokens := servertest.TokensFile(t, map[string][2]string{
		"backend": {"rank", "example-token"},
		"loader":  {"ingest", "loader-token"},
	})
	server := servertest.Start(t, "--tls-cert="+pki.Path("server.pem"), "--tls-key="+pki.Path("server-key.pem"), "--auth-tokens="+tokens)
	tlsArgs := []string{"-target", server.Target, "-ca", pki.Path("ca.pem"), "-token", "example-token"}

	// The catalog knows a2 only.
	loader, err := client.New(server.Target, client.WithTLS(client.TLS{RootCAs: pki.CA}), client.WithToken("loader-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = loader.Close() }()
	upserted, err := loader.UpsertArticles(context.Background(), &rankerv1.UpsertArticlesRequest{Articles: []*rankerv1.Article{{
		Id: "a2", Category: "news", Subcategory: "world", Title: "a known article", WordCount: 300,
		PublishTime: timestamppb.Now(),
	}}})
	if err != nil || upserted.GetAccepted() != 1 {
		t.Fatalf("UpsertArticles: %v, %v; want a2 accepted", upserted, err)
	}

	var out bytes.Buffer
	if err := run(context.Background(), append(tlsArgs, "-user", "reader-17", "-device", "mobile", "-time", "2026-01-26T00:00:00Z", "a1", "a2", "a3"), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 || lines[0] != "model "+servertest.ModelName+"/"+servertest.ModelVersion {
		t.Fatalf("output:\n%s\nwant the model line, three ranked ids and the unknown ones", out.String())
	}
	for _, line := range lines[1:4] {
		fields := strings.Fields(line)
		known := len(fields) == 3 && fields[1] == "a2"
		unknown := len(fields) == 4 && fields[1] != "a2" && fields[3] == "unknown"
		if !known && !unknown {
			t.Errorf("line %q: want a2 unmarked and a1, a3 marked unknown", line)
		}
	}
	if want := "unknown to the server (no catalog row): a1, a3"; lines[4] != want {
		t.Errorf("last line %q, want %q", lines[4], want)
	}

	// -top-k limits the ranking, not the list of unknown ids.
	out.Reset()
	if err := run(context.Background(), append(tlsArgs, "-user", "reader-17", "-top-k", "1", "a1", "a3"), &out); err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "1 a") || lines[2] != "unknown to the server (no catalog row): a1, a3" {
		t.Errorf("output:\n%s\nwant the model line, one ranked id and both unknown ones", out.String())
	}

	// Strict mode refuses the unknown ids, one field a line.
	out.Reset()
	err = run(context.Background(), append(tlsArgs, "-user", "reader-17", "-strict", "a1", "a2", "a3"), &out)
	if e, ok := client.AsError(err); !ok || e.Info == nil || e.Info.Reason != "STRICT_FEATURES" {
		t.Fatalf("got %v, want a *client.Error with reason STRICT_FEATURES", err)
	}
	for _, want := range []string{"refused candidates[0].id: ", "refused candidates[2].id: "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q, want a line starting %q", out.String(), want)
		}
	}
	if strings.Contains(out.String(), "candidates[1].id") {
		t.Errorf("output %q names a2, which the catalog knows", out.String())
	}

	if err := run(context.Background(), append(tlsArgs, "-time", "yesterday", "a1"), &out); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Errorf("-time yesterday: got %v, want an error asking for RFC 3339", err)
	}

	out.Reset()
	err = run(context.Background(), append(tlsArgs, "a1", "a1"), &out)
	if e, ok := client.AsError(err); !ok || len(e.Violations) != 1 {
		t.Fatalf("got %v, want a *client.Error with one violation", err)
	}
	if want := "refused candidates[1].id: "; !strings.HasPrefix(out.String(), want) {
		t.Errorf("output %q, want it to start with %q", out.String(), want)
	}
}
