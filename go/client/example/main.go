// Command example ranks articles for one reader with the client, as a
// backend service would, and prints the ranking or the fields the server
// refused:
//
//	go run ranker.internal/client/example -target 127.0.0.1:50051 -user reader-17 a1 a2 a3
//
// Ids the server's catalog does not know are scored with their article
// features missing: they are marked "unknown" and listed on a last line.
// With -strict the server refuses them instead. With -ca (and -token, or
// -cert and -key for mutual TLS) it speaks TLS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"ranker.internal/client"
	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("example", flag.ContinueOnError)
	target := fs.String("target", "127.0.0.1:50051", "server address")
	user := fs.String("user", "", "reader id")
	topK := fs.Uint("top-k", 0, "how many to return; 0 returns all")
	device := fs.String("device", "", "the reader's device: mobile, desktop or tablet (empty: missing)")
	at := fs.String("time", "", "the moment the features describe, RFC 3339 (empty: the server's clock)")
	strict := fs.Bool("strict", false, "refuse the request if a model feature is missing (an id the catalog does not know, say)")
	noExploration := fs.Bool("no-exploration", false, "the model's order, never an explored one (disable_exploration)")
	token := fs.String("token", os.Getenv("RANKER_TOKEN"), "bearer token (default $RANKER_TOKEN)")
	ca := fs.String("ca", "", "PEM CA bundle to verify the server: speaks TLS")
	cert := fs.String("cert", "", "PEM client certificate, for mutual TLS")
	key := fs.String("key", "", "PEM key of -cert")
	timeout := fs.Duration("timeout", time.Second, "deadline of the call")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: example [flags] article-id [article-id ...]")
	}
	opts := []client.Option{client.WithTimeout(*timeout)}
	if *ca != "" || *cert != "" {
		t, err := client.LoadTLS(*ca, *cert, *key)
		if err != nil {
			return err
		}
		opts = append(opts, client.WithTLS(t))
	}
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	c, err := client.New(*target, opts...)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()

	req := client.ByIDs(*user, fs.Args()...)
	req.TopK = uint32(*topK)
	req.Device = *device
	if *at != "" {
		t, err := time.Parse(time.RFC3339Nano, *at)
		if err != nil {
			return fmt.Errorf("-time %q: want RFC 3339, e.g. 2026-01-26T00:00:00Z", *at)
		}
		req.EventTime = timestamppb.New(t)
	}
	if *strict {
		req.Strictness = rankerv1.Strictness_STRICTNESS_STRICT
	}
	req.DisableExploration = *noExploration
	resp, err := c.Rank(ctx, req)
	if e, ok := client.AsError(err); ok {
		// The fields at fault, one a line, for a person or a script.
		for _, v := range e.Violations {
			_, _ = fmt.Fprintf(out, "refused %s: %s\n", v.Field, v.Description)
		}
		return e
	} else if err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "model %s/%s\n", resp.GetModelName(), resp.GetModelVersion())
	unknown := make(map[string]bool, len(resp.GetUnknownCandidates()))
	for _, id := range resp.GetUnknownCandidates() {
		unknown[id] = true
	}
	for i, sc := range resp.GetCandidates() {
		mark := ""
		if unknown[sc.GetId()] {
			// Scored without its article features: the score says little.
			mark = " unknown"
		}
		_, _ = fmt.Fprintf(out, "%d %s %.6f%s\n", i+1, sc.GetId(), sc.GetScore(), mark)
	}
	if len(unknown) > 0 {
		_, _ = fmt.Fprintf(out, "unknown to the server (no catalog row): %s\n", strings.Join(resp.GetUnknownCandidates(), ", "))
	}
	return nil
}
