package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a call the server (or the connection) refused: its gRPC code and
// message, and the structured details the server attaches, so a caller acts
// on the field or the limit without parsing the message. Every method of
// Client returns one for a failed call; find it with errors.As.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the status message, "field: what is wrong" for a bad request.
	Message string
	// Violations are the google.rpc.BadRequest field violations: which
	// field of the request is at fault (for example "candidates[3].id", or
	// "feature_names" listing features a strict request lacks) and why.
	Violations []FieldViolation
	// Info is the google.rpc.ErrorInfo, when the server sent one: a reason
	// such as LIMIT_EXCEEDED (with the limit and the flag that sets it in
	// Info.Metadata) or OVERLOADED.
	Info *ErrorInfo
	// Resource is the google.rpc.ResourceInfo, when the server sent one: the
	// model or version that was not found.
	Resource *ResourceInfo
	// RetryDelay is the google.rpc.RetryInfo delay: how long the server asks
	// a caller to wait before trying again (an overloaded server sheds with
	// RESOURCE_EXHAUSTED and a delay). Zero when the server sent none.
	RetryDelay time.Duration

	status *status.Status
}

// FieldViolation is one field of a request that the server refused.
type FieldViolation struct {
	Field       string
	Description string
}

// ErrorInfo is why a call failed, in a form a program can switch on.
type ErrorInfo struct {
	Reason   string
	Domain   string
	Metadata map[string]string
}

// ResourceInfo names the resource a call was about.
type ResourceInfo struct {
	Type        string
	Name        string
	Description string
}

// Error returns the code, the message and every field violation.
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ranker: %s: %s", e.Code, e.Message)
	for _, v := range e.Violations {
		// The message of a single violation already says it; more are listed.
		if len(e.Violations) > 1 || e.Message != v.Field+": "+v.Description {
			fmt.Fprintf(&b, "; %s: %s", v.Field, v.Description)
		}
	}
	return b.String()
}

// GRPCStatus makes status.FromError and status.Code see the original status.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// Is makes errors.Is(err, context.DeadlineExceeded) and context.Canceled
// true for the calls that ended for those reasons.
func (e *Error) Is(target error) bool {
	switch e.Code {
	case codes.DeadlineExceeded:
		return target == context.DeadlineExceeded
	case codes.Canceled:
		return target == context.Canceled
	}
	return false
}

// Violation returns the violation of field, if the server named it.
func (e *Error) Violation(field string) (FieldViolation, bool) {
	for _, v := range e.Violations {
		if v.Field == field {
			return v, true
		}
	}
	return FieldViolation{}, false
}

// fromCall turns a failed call's error into an *Error; nil stays nil, and an
// error that carries no gRPC status (none does, from grpc-go) is returned
// unchanged.
func fromCall(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				e.Violations = append(e.Violations, FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.ErrorInfo:
			e.Info = &ErrorInfo{Reason: d.GetReason(), Domain: d.GetDomain(), Metadata: d.GetMetadata()}
		case *errdetails.ResourceInfo:
			e.Resource = &ResourceInfo{Type: d.GetResourceType(), Name: d.GetResourceName(), Description: d.GetDescription()}
		case *errdetails.RetryInfo:
			e.RetryDelay = d.GetRetryDelay().AsDuration()
		}
	}
	return e
}

// AsError is errors.As for *Error, the common case in one line.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
