// Command example ranks articles for one reader with the client, as a
// backend service would, and prints the ranking or the fields the server
// refused:
//
//	go run ranker.internal/client/example -target 127.0.0.1:50051 -user reader-17 a1 a2 a3
//
// With -ca (and -token, or -cert and -key for mutual TLS) it speaks TLS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

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
	strict := fs.Bool("strict", false, "refuse the request if a model feature is missing")
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
	if *strict {
		req.Strictness = rankerv1.Strictness_STRICTNESS_STRICT
	}
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
	for i, sc := range resp.GetCandidates() {
		_, _ = fmt.Fprintf(out, "%d %s %.6f\n", i+1, sc.GetId(), sc.GetScore())
	}
	return nil
}
