package features

import "context"

// Service is a feature state the server ranks from and records into. Each
// backend is a package of its own (features/embedded, the default, and
// features/redisstate, shared by replicas) that the process wiring opens;
// every one applies the acceptance rules of rules.go, and
// features/backendtest holds each to the same cases.
type Service interface {
	// Fill computes the features at cols of names for each candidate (see
	// State.Fill) and returns the ids the catalog does not know.
	Fill(ctx context.Context, q Query, ids []string, names []string, cols []int, rows []float32) (unknown []string, err error)
	// UpsertArticles validates and stores catalog entries; more than
	// MaxBatch is a BatchTooLargeError.
	UpsertArticles(ctx context.Context, articles []Article) (Result, error)
	// RecordEvents validates and records a batch; an error means none of it
	// was recorded and the caller should retry (more than MaxBatch events is
	// a BatchTooLargeError, and retrying does not help).
	RecordEvents(ctx context.Context, impressions []Impression, clicks []Click) (Result, error)
	// Counts reports articles, readers, events recorded, and articles with
	// an embedding.
	Counts() (articles, readers, events, embeddings int)
	// Close releases the state.
	Close() error
}

// Versioned is a state that replicas share through one ordered log: each
// write's Result.Version is its place in that log, and every replica
// applies the log in order, a few milliseconds behind the replica that
// took the write. A caller that must read its own writes on any replica
// passes the version back (RankRequest.min_state_version).
type Versioned interface {
	// WaitVersion returns nil once this replica has applied the write at
	// version v, or an error saying how far it has got when ctx ends first.
	WaitVersion(ctx context.Context, v uint64) error
}
