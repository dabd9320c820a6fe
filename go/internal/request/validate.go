// Package request turns a RankRequest into what the models score: it
// validates the request against the limits and the contract
// (proto/ranker/v1/ranking_service.proto), maps its columns to each model's
// feature order (cached by layout), fills the rows, orders the scores, and
// builds strict mode's refusals. It knows nothing of the server around it.
package request

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/rpcerr"
)

// maxUserIDBytes bounds user_id, as the feature state bounds the ids it stores.
const maxUserIDBytes = 256

// MaxNameBytes bounds a feature name or a context key; MaxCandidateIDBytes a
// candidate id.
const (
	MaxNameBytes        = 256
	MaxCandidateIDBytes = 1024
)

// Limits bound the work one request may ask for.
type Limits struct {
	MaxCandidates int
	MaxFeatures   int
	// MaxRequestMemory bounds a request's estimated working memory in bytes
	// (0: unbounded).
	MaxRequestMemory int64
}

// Validator checks requests against the limits, and their device against
// the names the feature specification accepts.
type Validator struct {
	limits  Limits
	devices []string
	idSets  sync.Pool // map[string]int for duplicate-id checks, reused
}

// NewValidator returns a Validator of limits and devices.
func NewValidator(limits Limits, devices []string) *Validator {
	return &Validator{limits: limits, devices: devices}
}

// Validate checks a request against the limits and the contract in
// proto/ranker/v1/ranking_service.proto. It returns the context keys sorted,
// so the layout key does not depend on map order.
func (v *Validator) Validate(req *rankerv1.RankRequest) ([]string, error) {
	limits, devices, idSets := v.limits, v.devices, &v.idSets
	if len(req.GetCandidates()) == 0 {
		return nil, rpcerr.Invalid("candidates: at least one candidate is required")
	}
	if n := len(req.GetCandidates()); n > limits.MaxCandidates {
		return nil, rpcerr.OverLimit("candidates", int64(n), int64(limits.MaxCandidates), "max-candidates", "%d candidates", n)
	}
	names := req.GetFeatureNames()
	if n := len(names) + len(req.GetContextFeatures()); n > limits.MaxFeatures {
		return nil, rpcerr.OverLimit("feature_names", int64(n), int64(limits.MaxFeatures), "max-features", "%d features (with context_features)", n)
	}
	seen := make(map[string]int, len(names))
	for i, n := range names {
		if n == "" {
			return nil, rpcerr.Invalid("feature_names[%d]: empty name", i)
		}
		if len(n) > MaxNameBytes {
			return nil, rpcerr.Invalid("feature_names[%d]: %d bytes, more than %d", i, len(n), MaxNameBytes)
		}
		if first, dup := seen[n]; dup {
			return nil, rpcerr.Invalid("feature_names[%d]: %s repeats feature_names[%d]", i, rpcerr.Quote(n), first)
		}
		seen[n] = i
	}
	keys := make([]string, 0, len(req.GetContextFeatures()))
	for k, v := range req.GetContextFeatures() {
		if k == "" {
			return nil, rpcerr.Invalid("context_features: empty key")
		}
		if len(k) > MaxNameBytes {
			return nil, rpcerr.Invalid("context_features[%s]: key of %d bytes, more than %d", rpcerr.Quote(k), len(k), MaxNameBytes)
		}
		if i, dup := seen[k]; dup {
			return nil, rpcerr.Invalid("context_features[%s]: also declared as feature_names[%d]", rpcerr.Quote(k), i)
		}
		if math.IsInf(float64(v), 0) {
			return nil, rpcerr.Invalid("context_features[%s]: %v is not allowed; send NaN or leave it out for missing", rpcerr.Quote(k), v)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if n := len(req.GetUserId()); n > maxUserIDBytes {
		return nil, rpcerr.Invalid("user_id: %d bytes, more than %d", n, maxUserIDBytes)
	}
	if n := len(req.GetModelName()); n > MaxNameBytes {
		return nil, rpcerr.Invalid("model_name: %d bytes, more than %d", n, MaxNameBytes)
	}
	if n := len(req.GetModelVersion()); n > MaxNameBytes {
		return nil, rpcerr.Invalid("model_version: %d bytes, more than %d", n, MaxNameBytes)
	}
	if st := req.GetStrictness(); rankerv1.Strictness_name[int32(st)] == "" {
		return nil, rpcerr.Invalid("strictness: %d is not a Strictness value", int32(st))
	}
	if n := len(req.GetRequestId()); n > MaxNameBytes { // echoed in the reply, logs and exposures
		return nil, rpcerr.Invalid("request_id: %d bytes, more than %d", n, MaxNameBytes)
	}
	if n := len(req.GetExperimentVariant()); n > MaxNameBytes {
		return nil, rpcerr.Invalid("experiment_variant: %d bytes, more than %d", n, MaxNameBytes)
	}
	if d := req.GetDevice(); d != "" && !slices.Contains(devices, d) {
		return nil, rpcerr.Invalid("device: %s is not one of %v", rpcerr.Quote(d), devices)
	}
	if t := req.GetEventTime(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, rpcerr.Invalid("event_time: %v", err)
		}
	}
	ids, _ := idSets.Get().(map[string]int)
	if ids == nil {
		ids = make(map[string]int, len(req.GetCandidates()))
	}
	defer func() {
		clear(ids)
		idSets.Put(ids)
	}()
	for i, c := range req.GetCandidates() {
		if c.GetId() == "" {
			return nil, rpcerr.Invalid("candidates[%d].id: empty id", i)
		}
		if len(c.GetId()) > MaxCandidateIDBytes {
			return nil, rpcerr.Invalid("candidates[%d].id: %d bytes, more than %d", i, len(c.GetId()), MaxCandidateIDBytes)
		}
		if first, dup := ids[c.GetId()]; dup {
			return nil, rpcerr.Invalid("candidates[%d].id: %s repeats candidates[%d].id", i, rpcerr.Quote(c.GetId()), first)
		}
		ids[c.GetId()] = i
		if len(c.GetFeatures()) != len(names) {
			return nil, rpcerr.Invalid("candidates[%d].features: %d values, feature_names declares %d", i, len(c.GetFeatures()), len(names))
		}
		for j, v := range c.GetFeatures() {
			if math.IsInf(float64(v), 0) {
				return nil, rpcerr.Invalid("candidates[%d].features[%d] (%s): %v is not allowed; send NaN for missing", i, j, names[j], v)
			}
		}
	}
	return keys, nil
}

// String describes the limits for the startup log.
func (l Limits) String() string {
	return fmt.Sprintf("max %d candidates, %d features, %d bytes of working memory", l.MaxCandidates, l.MaxFeatures, l.MaxRequestMemory)
}
