package server

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"ranker/internal/registry"
	"ranker/internal/rpcerr"
)

// unknownModel is NOT_FOUND for a model name the server does not serve,
// quoting the name short.
func (s *Server) unknownModel(name string) error {
	description := fmt.Sprintf("%s is not served (serving %v)", rpcerr.Quote(name), s.models.Names())
	st := status.New(codes.NotFound, "model_name: "+description)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model_name", Description: description}}},
		rpcerr.ModelResource(name, fmt.Sprintf("serving %v", s.models.Names())),
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// modelUnavailable is UNAVAILABLE for a model that has no version serving
// yet (MODEL_NOT_READY), or a server shutting down (SHUTTING_DOWN): a retry,
// later or on another replica, may succeed.
func modelUnavailable(name string, err error) error {
	reason := "MODEL_NOT_READY"
	if errors.Is(err, registry.ErrClosed) {
		reason = "SHUTTING_DOWN"
	}
	return rpcerr.Failure(codes.Unavailable, reason, map[string]string{"model": rpcerr.Shortened(name)}, fmt.Sprintf("model: %v", err),
		rpcerr.ModelResource(name, err.Error()), &errdetails.RetryInfo{RetryDelay: durationpb.New(rpcerr.RetryAfterUnavailable)})
}

// variantUnavailable is UNAVAILABLE for an interleaved variant one of whose
// models (at its key of the experiment config) cannot be acquired.
func variantUnavailable(experimentName, variant, key, modelName string, err error) error {
	return rpcerr.Failure(codes.Unavailable, "VARIANT_MODEL_UNAVAILABLE",
		map[string]string{"experiment": experimentName, "variant": variant, "model": modelName},
		fmt.Sprintf("experiment %s variant %s: %s: %v", experimentName, variant, key, err), rpcerr.ModelResource(modelName, err.Error()))
}

// versionNotLoaded is NOT_FOUND for a pinned model_version that is not
// loaded: the field (BadRequest), the model version asked for
// (ResourceInfo), and the versions that are loaded, in the message too.
func versionNotLoaded(e *registry.VersionNotLoadedError) error {
	loaded := "loaded: " + e.Serving
	if len(e.Pinned) > 0 {
		loaded += " (serving), " + strings.Join(e.Pinned, ", ") + " (pinned by the experiment)"
	}
	description := fmt.Sprintf("%s of model %s is not loaded; %s", rpcerr.Quote(e.Version), e.Model, loaded)
	st := status.New(codes.NotFound, "model_version: "+description)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model_version", Description: description}}},
		&errdetails.ResourceInfo{ResourceType: "ranker.v1.ModelVersion", ResourceName: e.Model + "/" + rpcerr.Shortened(e.Version),
			Description: loaded},
		&errdetails.ErrorInfo{Reason: "MODEL_VERSION_NOT_LOADED", Domain: rpcerr.Domain, Metadata: map[string]string{
			"model": e.Model, "serving_version": e.Serving, "pinned_versions": strings.Join(e.Pinned, ",")}},
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// UnknownMethod answers a method the server does not have. gRPC's own answer
// skips the stats handlers, so such calls would go uncounted; this one goes
// through them like any other call.
func UnknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	return status.Errorf(codes.Unimplemented, "unknown method %s", rpcerr.Quote(method))
}
