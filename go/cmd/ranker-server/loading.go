package main

import (
	"context"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/rpcerr"
	"ranker/internal/server"
)

// loadingService is the ranking service as registered: the port opens
// before the feature state and the models are loaded (a replay can take
// seconds), so probes and callers reach a pod that says it is loading
// instead of one that refuses connections. Until serve is called every
// call is UNAVAILABLE, naming what is still loading; then each goes to the
// server.
type loadingService struct {
	rankerv1.UnimplementedRankingServiceServer
	ranking     atomic.Pointer[server.Server]
	stateLoaded atomic.Bool
	modelLoaded atomic.Bool
}

var _ rankerv1.RankingServiceServer = (*loadingService)(nil)

// serve sends every call from now on to s.
func (l *loadingService) serve(s *server.Server) { l.ranking.Store(s) }

// stillLoading is UNAVAILABLE (reason LOADING, a retry delay) naming what
// is still loading.
func (l *loadingService) stillLoading() error {
	what := "the feature state and the model are"
	switch state, model := l.stateLoaded.Load(), l.modelLoaded.Load(); {
	case state && model:
		what = "the server is"
	case state:
		what = "the model is"
	case model:
		what = "the feature state is"
	}
	return rpcerr.Failure(codes.Unavailable, "LOADING", nil, "loading: "+what+" still loading; retry once health reports "+
		rankerv1.RankingService_ServiceDesc.ServiceName+" SERVING",
		&errdetails.RetryInfo{RetryDelay: durationpb.New(rpcerr.RetryAfterUnavailable)})
}

func (l *loadingService) Rank(ctx context.Context, req *rankerv1.RankRequest) (*rankerv1.RankResponse, error) {
	if s := l.ranking.Load(); s != nil {
		return s.Rank(ctx, req)
	}
	return nil, l.stillLoading()
}

func (l *loadingService) GetModelInfo(ctx context.Context, req *rankerv1.GetModelInfoRequest) (*rankerv1.GetModelInfoResponse, error) {
	if s := l.ranking.Load(); s != nil {
		return s.GetModelInfo(ctx, req)
	}
	return nil, l.stillLoading()
}

func (l *loadingService) UpsertArticles(ctx context.Context, req *rankerv1.UpsertArticlesRequest) (*rankerv1.UpsertArticlesResponse, error) {
	if s := l.ranking.Load(); s != nil {
		return s.UpsertArticles(ctx, req)
	}
	return nil, l.stillLoading()
}

func (l *loadingService) RecordEvents(ctx context.Context, req *rankerv1.RecordEventsRequest) (*rankerv1.RecordEventsResponse, error) {
	if s := l.ranking.Load(); s != nil {
		return s.RecordEvents(ctx, req)
	}
	return nil, l.stillLoading()
}
