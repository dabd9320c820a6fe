package features

import "context"

// Service is a feature state the server ranks from and records into: the
// embedded Store (the default) or Redis, shared by replicas.
type Service interface {
	// Fill computes the features at cols of names for each candidate (see
	// State.Fill) and returns the ids the catalog does not know.
	Fill(ctx context.Context, q Query, ids []string, names []string, cols []int, rows []float32) (unknown []string, err error)
	// UpsertArticles validates and stores catalog entries.
	UpsertArticles(ctx context.Context, articles []Article) (Result, error)
	// RecordEvents validates and records a batch; an error means none of it
	// was recorded and the caller should retry.
	RecordEvents(ctx context.Context, impressions []Impression, clicks []Click) (Result, error)
	// Counts reports articles, readers, events recorded, and articles with
	// an embedding.
	Counts() (articles, readers, events, embeddings int)
	// Close releases the state.
	Close() error
}

var _ Service = (*Store)(nil)
