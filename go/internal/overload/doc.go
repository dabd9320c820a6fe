// Package overload keeps the ranker server within its bounds under load:
// every layer that refuses, stops or spreads work lives here, and each
// counts what it sheds in ranker_shed_total{reason}. The layers act in this
// order on a call:
//
//  1. Guard.Tap, before gRPC allocates anything for the call (guard.go):
//     memory_pressure while the heap is over --shed-heap-bytes
//     (ShedHeapBytes), write_memory_pressure for RecordEvents and
//     UpsertArticles from the lower --shed-writes-heap-bytes on (memory.go,
//     which also prunes and collects so memory comes back, and reports
//     the ranking service NOT_SERVING while Rank cannot be served), then
//     inflight past --max-inflight calls open server-wide (health checks
//     are exempt from all of them).
//  2. Guard as a stats handler (guard.go): slow_request ends a call whose
//     message has not arrived within --request-read-timeout.
//  3. Scoring.Admit, in the Rank handler once the request is valid and its
//     models known (scoring.go): memory when the request's estimated
//     working memory is over --max-request-memory; then a scoring slot
//     (--max-scoring) with a short queue (admission.go): queue_full past
//     --max-queue waiting, queue_timeout past --queue-timeout,
//     caller_gone when the caller leaves while it waits.
//  4. Scoring.Parts, once admitted (scoring.go): how many parts the
//     request's rows are scored in, one per idle core, counting the
//     requests scoring, the calls open (Guard.Open) and the cores other
//     processes keep busy (SampleOtherLoad, load.go). This is the one place
//     that decides scoring parallelism: the server scores that many
//     contiguous ranges at once, each in chunks on one goroutine, and the
//     native kernel (treeensemble.Ensemble.Score) splits only by the part
//     count its caller passes, never by GOMAXPROCS on its own.
//
// The package names no gRPC status: it returns a Refusal (a reason, a
// message naming the flag, a retry delay), and the server maps it to one.
// Its series are registered by NewMetrics (metrics.go).
package overload
