package server

import (
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/model"
	"ranker/internal/registry"
)

// maxStrictListed bounds the names a strict refusal lists, in its message
// and as field violations: both travel in the response trailers, which
// clients cap (gRPC's C core, under Python, and Java at 8 KiB by default),
// and a request may send hundreds of unknown names. With names clipped to
// clipBytes, 24 keep the trailers under 5 KiB (and list every
// feature of a model of the usual size).
const maxStrictListed = 24

// isStrict is the request's strictness, or the server's default when the
// request leaves it unspecified.
func (s *Server) isStrict(req *rankerv1.RankRequest) bool {
	switch req.GetStrictness() {
	case rankerv1.Strictness_STRICTNESS_STRICT:
		return true
	case rankerv1.Strictness_STRICTNESS_LENIENT:
		return false
	}
	return s.strict
}

// strictRefusal is INVALID_ARGUMENT for a strict request that lacks a
// feature of any of models (neither sent nor computable by this server's
// feature engine) or sends a name none of them uses; nil when it has neither.
//
// This checks the request's layout, before any scoring; strictUnknownCandidates
// checks, after the features are computed, the candidates they could not be
// computed for.
func (s *Server) strictRefusal(req *rankerv1.RankRequest, contextKeys []string, models ...*model.Model) error {
	var computable func(string) bool
	if s.features != nil {
		computable = features.Computable
	}
	var missing []string
	unknown := map[string]bool{} // names no model uses
	for i, m := range models {
		mapping := s.mappings.get(m.Meta.FeatureHash, m.Meta.FeatureNames, req.GetFeatureNames(), contextKeys, computable)
		missing = union(missing, mapping.missing)
		ignored := map[string]bool{}
		for _, n := range mapping.ignored {
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
		return nil
	}
	modelNames := make([]string, len(models))
	for i, m := range models {
		modelNames[i] = m.Meta.ModelName + " " + m.Meta.ModelVersion
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
	}
	if len(unknownNames) > 0 {
		parts = append(parts, fmt.Sprintf("sends %d names that are not model features: %s", len(unknownNames), listed(unknownNames)))
	}
	msg := fmt.Sprintf("strictness: the request %s (%s; send STRICTNESS_LENIENT to score them as missing)",
		strings.Join(parts, "; and "), of)
	for _, m := range models {
		if len(missing) > 0 {
			s.metrics.StrictRefusals.WithLabelValues(m.Meta.ModelName, "missing_features").Inc()
		}
		if len(unknownNames) > 0 {
			s.metrics.StrictRefusals.WithLabelValues(m.Meta.ModelName, "unknown_features").Inc()
		}
	}
	return strictStatus(msg, violations, map[string]string{
		"missing": fmt.Sprint(len(missing)), "unknown": fmt.Sprint(len(unknownNames))})
}

// strictUnknownCandidates is INVALID_ARGUMENT for a strict request with
// candidates the catalog does not know, for which the server could not
// compute the article features m needs (and the request did not send):
// they would be scored as missing, as in lenient mode. nil when every
// candidate is known, or the request sends the article features.
//
// Other features the state lacks for one request stay scored as missing and
// reported even under strict mode: an article without an embedding (its
// semantic features), and the feature state unreachable
// (RankResponse.feature_state_error), which is no fault of the request.
func (s *Server) strictUnknownCandidates(req *rankerv1.RankRequest, m *model.Model, sc *scoring) error {
	if len(sc.unknown) == 0 {
		return nil
	}
	var missing []string
	for _, j := range sc.columns.computed {
		if name := m.Meta.FeatureNames[j]; features.DependsOnArticle(name) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	unknown := make(map[string]bool, len(sc.unknown))
	for _, id := range sc.unknown {
		unknown[id] = true
	}
	var violations []*errdetails.BadRequest_FieldViolation
	for _, n := range missing {
		violations = append(violations, &errdetails.BadRequest_FieldViolation{Field: "feature_names", Description: "missing " + n})
	}
	var ids []string
	for i, c := range req.GetCandidates() {
		if unknown[c.GetId()] {
			ids = append(ids, clip(c.GetId()))
			if len(violations) < maxStrictListed {
				violations = append(violations, &errdetails.BadRequest_FieldViolation{
					Field: fmt.Sprintf("candidates[%d].id", i), Description: clip(c.GetId()) + " is not in the catalog"})
			}
		}
	}
	s.metrics.StrictRefusals.WithLabelValues(m.Meta.ModelName, "unknown_candidates").Inc()
	msg := fmt.Sprintf("strictness: %d candidates are not in the catalog, so the request lacks %d model features for them, neither sent nor computed by the server: %s (candidates %s; model %s %s; upsert the articles first, send their features, or send STRICTNESS_LENIENT to score them as missing)",
		len(ids), len(missing), listed(missing), listed(ids), m.Meta.ModelName, m.Meta.ModelVersion)
	return strictStatus(msg, violations, map[string]string{
		"missing": fmt.Sprint(len(missing)), "unknown_candidates": fmt.Sprint(len(ids))})
}

// strictStatus is a strict refusal: the message, at most maxStrictListed
// field violations, and ErrorInfo STRICT_FEATURES with counts.
func strictStatus(msg string, violations []*errdetails.BadRequest_FieldViolation, counts map[string]string) error {
	st := status.New(codes.InvalidArgument, msg)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: violations[:min(len(violations), maxStrictListed)]},
		&errdetails.ErrorInfo{Reason: "STRICT_FEATURES", Domain: errorDomain, Metadata: counts},
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

// listed joins names, the first maxStrictListed of them.
func listed(names []string) string {
	if len(names) <= maxStrictListed {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:maxStrictListed], ", ") + fmt.Sprintf(" and %d more", len(names)-maxStrictListed)
}

// versionNotLoaded is NOT_FOUND for a pinned model_version that is not
// loaded: the field (BadRequest), the model version asked for
// (ResourceInfo), and the versions that are loaded, in the message too.
func versionNotLoaded(e *registry.VersionNotLoadedError) error {
	loaded := "loaded: " + e.Serving
	if len(e.Pinned) > 0 {
		loaded += " (serving), " + strings.Join(e.Pinned, ", ") + " (pinned by the experiment)"
	}
	description := fmt.Sprintf("%s of model %s is not loaded; %s", quote(e.Version), e.Model, loaded)
	st := status.New(codes.NotFound, "model_version: "+description)
	detailed, err := st.WithDetails(
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "model_version", Description: description}}},
		&errdetails.ResourceInfo{ResourceType: "ranker.v1.ModelVersion", ResourceName: e.Model + "/" + shortened(e.Version),
			Description: loaded},
		&errdetails.ErrorInfo{Reason: "MODEL_VERSION_NOT_LOADED", Domain: errorDomain, Metadata: map[string]string{
			"model": e.Model, "serving_version": e.Serving, "pinned_versions": strings.Join(e.Pinned, ",")}},
	)
	if err != nil {
		return st.Err()
	}
	return detailed.Err()
}

// shortened is s cut to quoteBytes, for a detail that echoes a caller's string.
func shortened(s string) string {
	if len(s) <= quoteBytes {
		return s
	}
	return s[:quoteBytes] + "..."
}
