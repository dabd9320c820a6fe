package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/features"
	"ranker/internal/request"
	"ranker/internal/rpcerr"
)

// micros converts a timestamp to microseconds since the epoch; 0 (refused as
// "required") when it is unset or invalid.
func micros(t *timestamppb.Timestamp) int64 {
	if t == nil || t.CheckValid() != nil {
		return 0
	}
	return t.AsTime().UnixMicro()
}

func rejections(in []features.Rejection) []*rankerv1.Rejection {
	out := make([]*rankerv1.Rejection, len(in))
	for i, r := range in {
		id := r.ID
		if len(id) > request.MaxCandidateIDBytes { // an overlong id is refused for its length: echo only its start
			id = id[:request.MaxCandidateIDBytes]
		}
		out[i] = &rankerv1.Rejection{Id: id, Field: r.Field, Reason: r.Reason}
	}
	return out
}

func (s *Server) stateOrError() (features.Service, error) {
	if s.features == nil {
		return nil, rpcerr.Failure(codes.FailedPrecondition, "NO_FEATURE_STATE", nil, "this server keeps no feature state",
			&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{
				Type: "FEATURE_STATE", Subject: "ranker-server", Description: "the server runs without feature state"}}})
	}
	return s.features, nil
}

// UpsertArticles implements rankerv1.RankingServiceServer.
func (s *Server) UpsertArticles(ctx context.Context, req *rankerv1.UpsertArticlesRequest) (resp *rankerv1.UpsertArticlesResponse, err error) {
	start := time.Now()
	defer func() {
		s.metrics.Requests.WithLabelValues("UpsertArticles", status.Code(err).String(), "", "").Inc()
		s.metrics.Latency.WithLabelValues("UpsertArticles").Observe(time.Since(start).Seconds())
	}()
	store, err := s.stateOrError()
	if err != nil {
		return nil, err
	}
	if err := features.CheckArticleBatch(len(req.GetArticles())); err != nil {
		return nil, rpcerr.WithField(codes.ResourceExhausted, err.Error())
	}
	articles := make([]features.Article, len(req.GetArticles()))
	for i, a := range req.GetArticles() {
		articles[i] = features.Article{ID: a.GetId(), Category: a.GetCategory(), Subcategory: a.GetSubcategory(),
			Title: a.GetTitle(), WordCount: a.GetWordCount(), PublishTime: micros(a.GetPublishTime()), Breaking: a.GetBreaking(),
			Embedding: a.GetEmbedding()}
	}
	res, err := store.UpsertArticles(ctx, articles)
	if errors.Is(err, features.ErrBatchTooLarge) {
		return nil, rpcerr.WithField(codes.ResourceExhausted, err.Error()) // retrying the same call does not help
	}
	if err != nil {
		return nil, stateUnavailable(err)
	}
	s.countEvents("article", res)
	return &rankerv1.UpsertArticlesResponse{Accepted: uint32(res.Accepted), Rejected: rejections(res.Rejected),
		StateVersion: res.Version}, nil
}

// RecordEvents implements rankerv1.RankingServiceServer.
func (s *Server) RecordEvents(ctx context.Context, req *rankerv1.RecordEventsRequest) (resp *rankerv1.RecordEventsResponse, err error) {
	start := time.Now()
	defer func() {
		s.metrics.Requests.WithLabelValues("RecordEvents", status.Code(err).String(), "", "").Inc()
		s.metrics.Latency.WithLabelValues("RecordEvents").Observe(time.Since(start).Seconds())
	}()
	store, err := s.stateOrError()
	if err != nil {
		return nil, err
	}
	if err := features.CheckEventBatch(len(req.GetImpressions()), len(req.GetClicks())); err != nil {
		return nil, rpcerr.WithField(codes.ResourceExhausted, err.Error())
	}
	impressions := make([]features.Impression, len(req.GetImpressions()))
	for i, e := range req.GetImpressions() {
		impressions[i] = features.Impression{EventID: e.GetEventId(), RequestID: e.GetRequestId(), UserID: e.GetUserId(),
			ArticleID: e.GetArticleId(), Position: e.GetPosition(), Device: e.GetDevice(), Time: micros(e.GetTime())}
	}
	clicks := make([]features.Click, len(req.GetClicks()))
	for i, e := range req.GetClicks() {
		clicks[i] = features.Click{EventID: e.GetEventId(), RequestID: e.GetRequestId(), UserID: e.GetUserId(),
			ArticleID: e.GetArticleId(), Time: micros(e.GetTime())}
	}
	res, err := store.RecordEvents(ctx, impressions, clicks)
	if errors.Is(err, features.ErrBatchTooLarge) {
		return nil, rpcerr.WithField(codes.ResourceExhausted, err.Error()) // retrying the same call does not help
	}
	if err != nil {
		// Nothing of the batch was recorded: the caller retries.
		return nil, stateUnavailable(err)
	}
	s.countEvents("event", res)
	return &rankerv1.RecordEventsResponse{Accepted: uint32(res.Accepted), Duplicates: uint32(res.Duplicates),
		Rejected: rejections(res.Rejected), StateVersion: res.Version}, nil
}

func (s *Server) countEvents(kind string, res features.Result) {
	s.metrics.Events.WithLabelValues(kind, "accepted").Add(float64(res.Accepted))
	s.metrics.Events.WithLabelValues(kind, "duplicate").Add(float64(res.Duplicates))
	s.metrics.Events.WithLabelValues(kind, "rejected").Add(float64(len(res.Rejected)))
}

// stateUnavailable is UNAVAILABLE for a batch the feature state could not
// take: nothing of it was recorded, and the same batch may be retried (event
// ids make a retry count once).
// stateBehind refuses a Rank whose min_state_version this replica has not
// applied in time; another replica (or a retry) answers.
func stateBehind(err error) error {
	return rpcerr.Failure(codes.Unavailable, "STATE_BEHIND", nil, fmt.Sprintf("min_state_version: %v", err),
		&errdetails.RetryInfo{RetryDelay: durationpb.New(rpcerr.RetryAfterUnavailable)})
}

func stateUnavailable(err error) error {
	return rpcerr.Failure(codes.Unavailable, "STATE_UNAVAILABLE", nil, fmt.Sprintf("state: %v", err),
		&errdetails.RetryInfo{RetryDelay: durationpb.New(rpcerr.RetryAfterUnavailable)})
}
