// Package rpcerr builds the gRPC statuses the ranker answers with: the code,
// a message that starts with the field at fault, and the google.rpc details
// (BadRequest, ErrorInfo, RetryInfo, ResourceInfo) a client acts on without
// parsing the message. The request path (server, request) and the
// interceptors share it, so every error has the same shape.
package rpcerr

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"ranker/internal/auth"
)

// Domain names this service in google.rpc.ErrorInfo details.
const Domain = auth.ErrorDomain

// QuoteBytes is how much of a caller's string an error message quotes.
const QuoteBytes = 64

// Quote is %q of s cut to QuoteBytes, so an error never echoes a huge string.
func Quote(s string) string {
	if len(s) <= QuoteBytes {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:QuoteBytes]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// Shortened is s cut to QuoteBytes, for a detail that echoes a caller's string.
func Shortened(s string) string {
	if len(s) <= QuoteBytes {
		return s
	}
	return s[:QuoteBytes] + "..."
}

// WithField is a status whose message is "field: description", with a
// google.rpc.BadRequest field violation beside it, so a client acts on the
// field without parsing the message. The message itself is unchanged for
// clients that only read text.
func WithField(code codes.Code, msg string) error {
	st := status.New(code, msg)
	field, description, ok := strings.Cut(msg, ": ")
	if !ok {
		return st.Err()
	}
	if detailed, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: description}},
	}); err == nil {
		return detailed.Err()
	}
	return st.Err() // the details failed to marshal; the message still names the field
}

// Invalid is INVALID_ARGUMENT; format starts with the field name and ": ".
func Invalid(format string, args ...any) error {
	return WithField(codes.InvalidArgument, fmt.Sprintf(format, args...))
}

// OverLimit is RESOURCE_EXHAUSTED for a request over a configured bound:
// the field it is about (BadRequest), and the limit and the flag that sets
// it (ErrorInfo), so an operator knows what to raise.
func OverLimit(field string, got, limit int64, flag, format string, args ...any) error {
	msg := fmt.Sprintf("%s: %s, over the limit of %d (--%s)", field, fmt.Sprintf(format, args...), limit, flag)
	st := status.New(codes.ResourceExhausted, msg)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}},
		&errdetails.ErrorInfo{Reason: "LIMIT_EXCEEDED", Domain: Domain, Metadata: map[string]string{
			"flag": flag, "limit": fmt.Sprint(limit), "requested": fmt.Sprint(got)}},
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// Overloaded is RESOURCE_EXHAUSTED for a request shed because the server is
// busy, with why (ErrorInfo metadata "cause") and the delay after which a
// retry is sensible.
func Overloaded(cause, msg string, retryAfter time.Duration) error {
	return Failure(codes.ResourceExhausted, "OVERLOADED", map[string]string{"cause": cause}, msg,
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
}

// Failure is a status with a google.rpc.ErrorInfo saying why in a word
// (reason, in this service's domain, with metadata), and any further details:
// for the errors that name no request field.
func Failure(code codes.Code, reason string, metadata map[string]string, msg string, more ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	details := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: Domain, Metadata: metadata}}, more...)
	detailed, err := st.WithDetails(details...)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// ModelResource is the google.rpc.ResourceInfo of a model (by name).
func ModelResource(name, description string) *errdetails.ResourceInfo {
	return &errdetails.ResourceInfo{ResourceType: "ranker.v1.Model", ResourceName: Shortened(name), Description: description}
}

// RetryAfterUnavailable is the RetryInfo delay of an UNAVAILABLE answer
// that passes once something outside the request recovers (a model
// loading, the feature state reconnecting).
const RetryAfterUnavailable = time.Second

// CallerGone is the status for a request whose caller has gone: its
// deadline passed (DEADLINE_EXCEEDED) or it cancelled (CANCELLED).
func CallerGone(ctx context.Context) error {
	// gRPC may end a call at its deadline by cancelling it: judge by the
	// deadline itself, not by which of the two the context reports.
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) || ctx.Err() == context.DeadlineExceeded {
		return Failure(codes.DeadlineExceeded, "CALLER_GONE", map[string]string{"cause": "deadline"},
			"deadline exceeded before the request was answered; its work was stopped")
	}
	return Failure(codes.Canceled, "CALLER_GONE", map[string]string{"cause": "cancelled"}, "the caller cancelled; its work was stopped")
}
