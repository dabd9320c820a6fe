// Package server implements ranker.v1.RankingService over a loaded model.
package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	rankerv1 "ranker/gen/ranker/v1"
	"ranker/internal/model"
)

// mappingCacheSize bounds how many request layouts are remembered.
const mappingCacheSize = 1024

// Server is the RankingService.
type Server struct {
	rankerv1.UnimplementedRankingServiceServer

	model    atomic.Pointer[model.Model]
	limits   Limits
	logger   *slog.Logger
	mappings *mappingCache
	rows     sync.Pool // *[]float32 feature buffers, reused across requests
	idSets   sync.Pool // map[string]int for duplicate-id checks, reused

	// missingFeatures counts, per model feature, the requests that did not
	// send it (it was scored as missing).
	missingMu       sync.Mutex
	missingFeatures map[string]uint64
}

var _ rankerv1.RankingServiceServer = (*Server)(nil)

// New returns a Server that scores with m.
func New(m *model.Model, limits Limits, logger *slog.Logger) *Server {
	s := &Server{
		limits:          limits,
		logger:          logger,
		mappings:        newMappingCache(mappingCacheSize),
		missingFeatures: make(map[string]uint64),
	}
	s.model.Store(m)
	logger.Info("limits", "limits", describeLimits(limits))
	return s
}

// Rank implements rankerv1.RankingServiceServer.
func (s *Server) Rank(ctx context.Context, req *rankerv1.RankRequest) (*rankerv1.RankResponse, error) {
	contextKeys, err := validate(req, s.limits, &s.idSets)
	if err != nil {
		s.logger.Debug("rank rejected", "request_id", req.GetRequestId(), "error", err)
		return nil, err
	}
	m := s.model.Load()
	mapping := s.mappings.get(m.Meta.FeatureHash, m.Meta.FeatureNames, req.GetFeatureNames(), contextKeys)
	s.countMissing(mapping.missing)

	n, f := len(req.GetCandidates()), len(m.Meta.FeatureNames)
	buf := s.rowBuffer(n*f + n)
	defer s.rows.Put(buf)
	rows, scores := (*buf)[:n*f], (*buf)[n*f:n*f+n]
	fillRows(rows, req, mapping)
	if err := m.Scorer.Score(rows, n, scores); err != nil {
		s.logger.Error("scoring failed", "request_id", req.GetRequestId(), "error", err)
		return nil, status.Error(codes.Internal, "scoring failed")
	}

	order := rankOrder(scores)
	k := n
	if topK := int(req.GetTopK()); topK > 0 && topK < n {
		k = topK
	}
	// One allocation for all scored candidates rather than one each.
	scored := make([]rankerv1.ScoredCandidate, k)
	out := make([]*rankerv1.ScoredCandidate, k)
	for r := range k {
		i := order[r]
		scored[r].Id, scored[r].Score = req.GetCandidates()[i].GetId(), scores[i]
		out[r] = &scored[r]
	}
	s.logger.Debug("ranked", "request_id", req.GetRequestId(), "candidates", n, "returned", k,
		"model_version", m.Meta.ModelVersion)
	return &rankerv1.RankResponse{
		RequestId:       req.GetRequestId(),
		Candidates:      out,
		ModelName:       m.Meta.ModelName,
		ModelVersion:    m.Meta.ModelVersion,
		MissingFeatures: mapping.missing,
		IgnoredFeatures: mapping.ignored,
	}, nil
}

// GetModelInfo implements rankerv1.RankingServiceServer.
func (s *Server) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest) (*rankerv1.GetModelInfoResponse, error) {
	m := s.model.Load()
	return &rankerv1.GetModelInfoResponse{
		ModelName:    m.Meta.ModelName,
		ModelVersion: m.Meta.ModelVersion,
		FeatureNames: m.Meta.FeatureNames,
		FeatureHash:  m.Meta.FeatureHash,
		CreatedAt:    timestamppb.New(m.Meta.CreatedAt),
		Objective:    m.Meta.Objective,
		Backend:      m.Scorer.Backend(),
	}, nil
}

func (s *Server) rowBuffer(size int) *[]float32 {
	if p, ok := s.rows.Get().(*[]float32); ok && cap(*p) >= size {
		*p = (*p)[:size]
		return p
	}
	b := make([]float32, size)
	return &b
}

func (s *Server) countMissing(names []string) {
	if len(names) == 0 {
		return
	}
	s.missingMu.Lock()
	for _, n := range names {
		s.missingFeatures[n]++
	}
	s.missingMu.Unlock()
}

// MissingCount reports how many requests lacked the named feature.
func (s *Server) MissingCount(name string) uint64 {
	s.missingMu.Lock()
	defer s.missingMu.Unlock()
	return s.missingFeatures[name]
}
