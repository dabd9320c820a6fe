package request

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/rpcerr"
)

// MaxStrictListed bounds the names a strict refusal lists, in its message
// and as field violations: both travel in the response trailers, which
// clients cap (gRPC's C core, under Python, and Java at 8 KiB by default),
// and a request may send hundreds of unknown names. With names clipped to
// clipBytes, 24 keep the trailers under 5 KiB (and list every
// feature of a model of the usual size).
const MaxStrictListed = 24

// The reasons of a strict refusal, as ranker_strict_refusals_total counts them.
const (
	StrictMissingFeatures   = "missing_features"
	StrictUnknownFeatures   = "unknown_features"
	StrictUnknownCandidates = "unknown_candidates"
)

// IsStrict is the request's strictness, or serverDefault when the request
// leaves it unspecified.
func IsStrict(req *rankerv1.RankRequest, serverDefault bool) bool {
	switch req.GetStrictness() {
	case rankerv1.Strictness_STRICTNESS_STRICT:
		return true
	case rankerv1.Strictness_STRICTNESS_LENIENT:
		return false
	}
	return serverDefault
}

// ModelMapping is one model a request is scored with, and the request's
// mapping to its features.
type ModelMapping struct {
	Name, Version string
	*Mapping
}

// StrictLayout is INVALID_ARGUMENT for a strict request that lacks a
// feature of any of models (neither sent nor computable by the server's
// feature engine) or sends a name none of them uses, after the reasons that
// apply (StrictMissingFeatures, StrictUnknownFeatures); nil when it has
// neither.
//
// This checks the request's layout, before any scoring; StrictCandidates
// checks, after the features are computed, the candidates they could not be
// computed for.
func StrictLayout(req *rankerv1.RankRequest, contextKeys []string, models ...ModelMapping) (reasons []string, refusal error) {
	var missing []string
	unknown := map[string]bool{} // names no model uses
	for i, m := range models {
		for _, n := range m.Missing {
			if !slices.Contains(missing, n) {
				missing = append(missing, n)
			}
		}
		ignored := map[string]bool{}
		for _, n := range m.Ignored {
			ignored[n] = true
		}
		if i == 0 {
			unknown = ignored
			continue
		}
		for n := range unknown {
			if !ignored[n] {
				delete(unknown, n)
			}
		}
	}
	if len(missing) == 0 && len(unknown) == 0 {
		return nil, nil
	}
	modelNames := make([]string, len(models))
	for i, m := range models {
		modelNames[i] = m.Name + " " + m.Version
	}
	of := "model " + strings.Join(modelNames, " and model ")

	// Unknown names in the order the request sent them; missing ones in the
	// model's order. Descriptions are short: they travel in the trailers.
	var violations []*errdetails.BadRequest_FieldViolation
	var unknownNames []string
	for i, n := range req.GetFeatureNames() {
		if unknown[n] {
			unknownNames = append(unknownNames, clip(n))
			violations = append(violations, &errdetails.BadRequest_FieldViolation{
				Field: fmt.Sprintf("feature_names[%d]", i), Description: clip(n) + " is not a feature of the model"})
		}
	}
	for _, k := range contextKeys {
		if unknown[k] {
			unknownNames = append(unknownNames, clip(k))
			violations = append(violations, &errdetails.BadRequest_FieldViolation{
				Field: "context_features[" + clip(k) + "]", Description: "not a feature of the model"})
		}
	}
	for _, n := range missing {
		violations = append(violations, &errdetails.BadRequest_FieldViolation{
			Field: "feature_names", Description: "missing " + n})
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, fmt.Sprintf("lacks %d model features, neither sent nor computed by the server: %s",
			len(missing), listed(missing)))
		reasons = append(reasons, StrictMissingFeatures)
	}
	if len(unknownNames) > 0 {
		parts = append(parts, fmt.Sprintf("sends %d names that are not model features: %s", len(unknownNames), listed(unknownNames)))
		reasons = append(reasons, StrictUnknownFeatures)
	}
	msg := fmt.Sprintf("strictness: the request %s (%s; send STRICTNESS_LENIENT to score them as missing)",
		strings.Join(parts, "; and "), of)
	return reasons, strictStatus(msg, violations, map[string]string{
		"missing": fmt.Sprint(len(missing)), "unknown": fmt.Sprint(len(unknownNames))})
}

// StrictCandidates is INVALID_ARGUMENT for a strict request with candidates
// the catalog does not know (unknown), for which the server could not
// compute the article features the model needs (articleMissing: the
// computed features that depend on the article) and the request did not
// send: they would be scored as missing, as in lenient mode. nil when every
// candidate is known, or the request sends the article features.
//
// Other features the state lacks for one request stay scored as missing and
// reported even under strict mode: an article without an embedding (its
// semantic features), and the feature state unreachable
// (RankResponse.feature_state_error), which is no fault of the request.
func StrictCandidates(req *rankerv1.RankRequest, model ModelMapping, unknown, articleMissing []string) error {
	if len(unknown) == 0 || len(articleMissing) == 0 {
		return nil
	}
	isUnknown := make(map[string]bool, len(unknown))
	for _, id := range unknown {
		isUnknown[id] = true
	}
	var violations []*errdetails.BadRequest_FieldViolation
	for _, n := range articleMissing {
		violations = append(violations, &errdetails.BadRequest_FieldViolation{Field: "feature_names", Description: "missing " + n})
	}
	var ids []string
	for i, c := range req.GetCandidates() {
		if isUnknown[c.GetId()] {
			ids = append(ids, clip(c.GetId()))
			if len(violations) < MaxStrictListed {
				violations = append(violations, &errdetails.BadRequest_FieldViolation{
					Field: fmt.Sprintf("candidates[%d].id", i), Description: clip(c.GetId()) + " is not in the catalog"})
			}
		}
	}
	msg := fmt.Sprintf("strictness: %d candidates are not in the catalog, so the request lacks %d model features for them, neither sent nor computed by the server: %s (candidates %s; model %s %s; upsert the articles first, send their features, or send STRICTNESS_LENIENT to score them as missing)",
		len(ids), len(articleMissing), listed(articleMissing), listed(ids), model.Name, model.Version)
	return strictStatus(msg, violations, map[string]string{
		"missing": fmt.Sprint(len(articleMissing)), "unknown_candidates": fmt.Sprint(len(ids))})
}

// strictStatus is a strict refusal: the message, at most MaxStrictListed
// field violations, and ErrorInfo STRICT_FEATURES with counts.
func strictStatus(msg string, violations []*errdetails.BadRequest_FieldViolation, counts map[string]string) error {
	st := status.New(codes.InvalidArgument, msg)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: violations[:min(len(violations), MaxStrictListed)]},
		&errdetails.ErrorInfo{Reason: "STRICT_FEATURES", Domain: rpcerr.Domain, Metadata: counts},
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// clipBytes is how much of a name the caller sent a strict refusal quotes.
const clipBytes = 24

// clip is %q of s cut to clipBytes.
func clip(s string) string {
	if len(s) <= clipBytes {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:clipBytes]) + "..."
}

// listed joins names, the first MaxStrictListed of them.
func listed(names []string) string {
	if len(names) <= MaxStrictListed {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:MaxStrictListed], ", ") + fmt.Sprintf(" and %d more", len(names)-MaxStrictListed)
}
