package overload

import "time"

// Why a call or a request was refused or stopped: the reason label of
// ranker_shed_total, and the ErrorInfo cause callers see.
const (
	ReasonMemoryPressure      = "memory_pressure"       // the heap over --shed-heap-bytes (Guard)
	ReasonWriteMemoryPressure = "write_memory_pressure" // a write call, the live heap over --shed-writes-heap-bytes (Guard, memory.go)
	ReasonInflight            = "inflight"              // --max-inflight calls open (Guard)
	ReasonSlowRequest         = "slow_request"          // no message within --request-read-timeout (Guard)
	ReasonMemory              = "memory"                // a request's working memory over --max-request-memory
	ReasonQueueFull           = "queue_full"            // every scoring slot taken and --max-queue waiting
	ReasonQueueTimeout        = "queue_timeout"         // no slot free within --queue-timeout
	ReasonCallerGone          = "caller_gone"           // deadline passed or cancelled before or while scoring
)

// Refusal is why this package turned a request away. It names no gRPC
// status: the server maps it to one (the Guard, a gRPC tap, through the
// status function it is given).
type Refusal struct {
	Reason  string // one of the Reason constants
	Message string // for the caller: what was over which bound, naming the flag
	// RetryAfter is when a retry is sensible (0 for ReasonMemory and
	// ReasonCallerGone: retrying the same request cannot help).
	RetryAfter time.Duration
	// Need and Limit are, for ReasonMemory, the request's estimated bytes
	// and --max-request-memory; Candidates and Features what it scores.
	Need, Limit, Candidates, Features int64
}

func (r *Refusal) Error() string { return r.Reason + ": " + r.Message }
