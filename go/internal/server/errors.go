package server

import (
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"ranker/internal/auth"
)

// errorDomain names this service in google.rpc.ErrorInfo details.
const errorDomain = auth.ErrorDomain

// withField is a status whose message is "field: description", with a
// google.rpc.BadRequest field violation beside it, so a client acts on the
// field without parsing the message. The message itself is unchanged for
// clients that only read text.
func withField(code codes.Code, msg string) error {
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

// invalid is INVALID_ARGUMENT; format starts with the field name and ": ".
func invalid(format string, args ...any) error {
	return withField(codes.InvalidArgument, fmt.Sprintf(format, args...))
}

// overLimit is RESOURCE_EXHAUSTED for a request over a configured bound:
// the field it is about (BadRequest), and the limit and the flag that sets
// it (ErrorInfo), so an operator knows what to raise.
func overLimit(field string, got, limit int64, flag, format string, args ...any) error {
	msg := fmt.Sprintf("%s: %s, over the limit of %d (--%s)", field, fmt.Sprintf(format, args...), limit, flag)
	st := status.New(codes.ResourceExhausted, msg)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: msg}}},
		&errdetails.ErrorInfo{Reason: "LIMIT_EXCEEDED", Domain: errorDomain, Metadata: map[string]string{
			"flag": flag, "limit": fmt.Sprint(limit), "requested": fmt.Sprint(got)}},
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// overloaded is RESOURCE_EXHAUSTED for a request shed because the server is
// busy, with why (ErrorInfo metadata "cause") and the delay after which a
// retry is sensible.
func overloaded(cause, msg string, retryAfter time.Duration) error {
	return failure(codes.ResourceExhausted, "OVERLOADED", map[string]string{"cause": cause}, msg,
		&errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
}

// failure is a status with a google.rpc.ErrorInfo saying why in a word
// (reason, in this service's domain, with metadata), and any further details:
// for the errors that name no request field.
func failure(code codes.Code, reason string, metadata map[string]string, msg string, more ...protoadapt.MessageV1) error {
	st := status.New(code, msg)
	details := append([]protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: errorDomain, Metadata: metadata}}, more...)
	detailed, err := st.WithDetails(details...)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// modelResource is the google.rpc.ResourceInfo of a model (by name).
func modelResource(name, description string) *errdetails.ResourceInfo {
	return &errdetails.ResourceInfo{ResourceType: "ranker.v1.Model", ResourceName: shortened(name), Description: description}
}

// retryAfterUnavailable is the RetryInfo delay of an UNAVAILABLE answer
// that passes once something outside the request recovers (a model
// loading, the feature state reconnecting).
const retryAfterUnavailable = time.Second
