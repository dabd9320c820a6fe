// Package metrics defines the server's Prometheus metrics, served on their
// own HTTP port so scraping never competes with gRPC traffic.
package metrics

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// latencyBuckets span 0.1 ms to about 3 s: a Rank of a few hundred
// candidates takes well under a millisecond.
var latencyBuckets = prometheus.ExponentialBuckets(0.0001, 2, 16)

// Metrics are every series the server exports.
type Metrics struct {
	Registry          *prometheus.Registry
	Requests          *prometheus.CounterVec
	Latency           *prometheus.HistogramVec
	Candidates        prometheus.Histogram
	Scores            *ScoreHistogram
	MissingFeatures   *prometheus.CounterVec
	ModelLoads        *prometheus.CounterVec
	ExposureWritten   prometheus.Counter
	ExposureDropped   prometheus.Counter
	ExposureLost      prometheus.Counter
	ShadowCorrelation *prometheus.HistogramVec
	ShadowSkipped     *prometheus.CounterVec
	Explored          *prometheus.CounterVec
	Events            *prometheus.CounterVec
	UnknownCandidates prometheus.Counter
	FeatureLatency    prometheus.Histogram
	StateErrors       prometheus.Counter
	StrictRefusals    *prometheus.CounterVec
	// VersionScores is Scores by model version too, for drift alerts that
	// compare a version with itself (versions' score offsets differ).
	VersionScores *versionScores
}

// New registers the metrics, and Go and process collectors, on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_requests_total", Help: "gRPC requests by method, status code, model and experiment variant.",
		}, []string{"method", "code", "model", "variant"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ranker_request_duration_seconds", Help: "Time to answer a gRPC request.",
			Buckets: latencyBuckets,
		}, []string{"method"}),
		Candidates: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ranker_candidates_per_request", Help: "Candidates in each Rank request.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13),
		}),
		Scores: newScoreHistogram("ranker_scores", "Distribution of candidate scores, for drift alerts.", "model"),
		MissingFeatures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_missing_features_total", Help: "Rank requests that lacked a model feature: neither sent nor computable, or an article feature of a candidate the catalog does not know (scored as missing).",
		}, []string{"model", "feature"}),
		ModelLoads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_model_loads_total", Help: "Model version loads by result (loaded or refused).",
		}, []string{"model", "result"}),
		ExposureWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ranker_exposure_records_total", Help: "Exposure records written to the file in the exposure directory, confirmed there after the write.",
		}),
		ExposureDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ranker_exposure_dropped_total", Help: "Exposure records that never reached a file: the buffer was full, or no file could be opened, rotated or written (see the server's warnings).",
		}),
		ExposureLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ranker_exposure_lost_total", Help: "Exposure records written into a file that had been deleted or moved away from the exposure directory, where no reader looks.",
		}),
		ShadowCorrelation: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ranker_shadow_rank_correlation", Help: "Spearman correlation between primary and shadow rankings.",
			Buckets: prometheus.LinearBuckets(-1, 0.1, 21),
		}, []string{"experiment", "shadow_model"}),
		ShadowSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_shadow_skipped_total", Help: "Shadow scorings skipped because the shadow workers were busy.",
		}, []string{"experiment"}),
		Explored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_explored_total", Help: "Rank responses whose top places exploration shuffled (policy shuffle-top), by model and experiment variant; divided by ranker_requests_total, the explored share.",
		}, []string{"model", "variant"}),
		Events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_state_events_total", Help: "Catalog entries and events sent to the feature state, by kind and result (accepted, duplicate, rejected).",
		}, []string{"kind", "result"}),
		FeatureLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ranker_feature_seconds", Help: "Time to compute a Rank request's features from the state.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 16),
		}),
		StateErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ranker_state_errors_total", Help: "Rank requests whose features could not be read from the feature state (scored as missing).",
		}),
		StrictRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ranker_strict_refusals_total", Help: "Rank requests refused by strict mode, by model and reason: missing_features (a model feature neither sent nor computable), unknown_features (a name the model does not use; a request with both counts in both), unknown_candidates (candidates not in the catalog, their article features not sent).",
		}, []string{"model", "reason"}),
		UnknownCandidates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ranker_unknown_candidates_total", Help: "Rank candidates the catalog did not know (article features scored as missing).",
		}),
	}
	m.VersionScores = &versionScores{hist: newScoreHistogram("ranker_version_scores",
		"Distribution of candidate scores by model version (the newest versions seen per model), for drift alerts.",
		"model", "version"), seen: map[string][]string{}}
	reg.MustRegister(m.VersionScores.hist)
	for _, kind := range []string{"article", "event"} {
		for _, result := range []string{"accepted", "duplicate", "rejected"} {
			m.Events.WithLabelValues(kind, result) // exported at 0, so rates exist from the start
		}
	}
	reg.MustRegister(m.Events, m.StrictRefusals, m.UnknownCandidates, m.FeatureLatency, m.StateErrors, m.Requests, m.Latency, m.Candidates, m.Scores, m.MissingFeatures, m.ModelLoads,
		m.ExposureWritten, m.ExposureDropped, m.ExposureLost, m.ShadowCorrelation, m.ShadowSkipped, m.Explored)
	return m
}

// Loaded implements registry.Events.
func (m *Metrics) Loaded(name, _ string) { m.ModelLoads.WithLabelValues(name, "loaded").Inc() }

// ScoringPath exports the native backend's vector level (avx512, avx2 or
// scalar), chosen once at start from the CPU and --scoring-path, as
// ranker_scoring_path_info{path}: a fleet of mixed CPUs shows which
// replicas score with which kernel.
func (m *Metrics) ScoringPath(path string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ranker_scoring_path_info", Help: "The native backend's vector level (1 for the one in use); each model's own path is in GetModelInfo's backend.",
	}, []string{"path"})
	g.WithLabelValues(path).Set(1)
	m.Registry.MustRegister(g)
}

// Refused implements registry.Events.
func (m *Metrics) Refused(name, _ string) { m.ModelLoads.WithLabelValues(name, "refused").Inc() }

// ModelAge exports, at each scrape, the age of every serving model version;
// created reports when each serving version was exported, by model name.
func (m *Metrics) ModelAge(created func() map[string]time.Time) {
	m.Registry.MustRegister(&modelAge{created: created, desc: prometheus.NewDesc(
		"ranker_model_age_seconds", "Seconds since the serving model version was exported.", []string{"model"}, nil)})
}

type modelAge struct {
	created func() map[string]time.Time
	desc    *prometheus.Desc
}

func (a *modelAge) Describe(ch chan<- *prometheus.Desc) { ch <- a.desc }

func (a *modelAge) Collect(ch chan<- prometheus.Metric) {
	for name, at := range a.created() {
		ch <- prometheus.MustNewConstMetric(a.desc, prometheus.GaugeValue, time.Since(at).Seconds(), name)
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return mux
}

// StateSize exports the feature state's size: articles, readers and events
// held, and articles with an embedding, read at each scrape.
func (m *Metrics) StateSize(counts func() (articles, readers, events, embeddings int)) {
	for i, kind := range []string{"articles", "readers", "events", "embeddings"} {
		m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ranker_state_size", Help: "Entries in the feature state, by kind.", ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 {
			a, r, e, v := counts()
			return float64([]int{a, r, e, v}[i])
		}))
	}
}

// StateApplyLag reports how many records of the shared log (the Kafka
// state's topic) the replica has not applied yet: its features are that far
// behind the other replicas'.
func (m *Metrics) StateApplyLag(lag func() int64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ranker_state_apply_lag_records", Help: "Records of the shared state's log not yet applied by this replica (as of its last fetch).",
	}, func() float64 { return float64(lag()) }))
}

// RPCOutcomes is a gRPC stats handler that counts every RPC by method and
// status code, including those that never reach a handler (a message that
// does not decode, one over the size limit), which the handlers' own
// counters cannot see.
type RPCOutcomes struct {
	counter     *prometheus.CounterVec
	undecodable *prometheus.CounterVec
	known       atomic.Pointer[map[string]string] // full method name -> its label
}

type methodKey struct{}

// undecodablePrefix starts gRPC's message for a request that does not
// decode (google.golang.org/grpc rpc_util.go); a test pins it.
const undecodablePrefix = "grpc: failed to unmarshal"

// Outcomes registers ranker_rpc_outcomes_total and returns its handler.
func (m *Metrics) Outcomes() *RPCOutcomes {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ranker_rpc_outcomes_total", Help: "Every gRPC call by method and status code, decode and size failures included.",
	}, []string{"method", "code"})
	u := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ranker_rpc_undecodable_total", Help: "gRPC calls whose request did not decode (answered INTERNAL by gRPC, though the caller is at fault), by method.",
	}, []string{"method"})
	m.Registry.MustRegister(c, u)
	return &RPCOutcomes{counter: c, undecodable: u}
}

// KnowMethods sets the methods the server registered; any other name a
// caller sends is labelled "unknown", so made-up method names cannot create
// series without bound.
func (o *RPCOutcomes) KnowMethods(services map[string]grpc.ServiceInfo) {
	known := map[string]string{}
	for service, info := range services {
		for _, m := range info.Methods {
			known["/"+service+"/"+m.Name] = m.Name
			o.undecodable.WithLabelValues(m.Name) // exported at 0, so the error-rate alert can subtract it
		}
	}
	o.known.Store(&known)
}

// methodLabel is the method's name if the server registered it, else
// "unknown".
func (o *RPCOutcomes) methodLabel(fullMethod string) string {
	if known := o.known.Load(); known != nil {
		if name, ok := (*known)[fullMethod]; ok {
			return name
		}
	}
	return "unknown"
}

// Refused counts a call turned away before gRPC created its stream (the
// stats handler never sees those).
func (o *RPCOutcomes) Refused(fullMethod string, code codes.Code) {
	o.counter.WithLabelValues(o.methodLabel(fullMethod), code.String()).Inc()
}

// TagRPC remembers the method's label.
func (o *RPCOutcomes) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, o.methodLabel(info.FullMethodName))
}

// HandleRPC counts the call when it ends.
func (o *RPCOutcomes) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok {
		return
	}
	name, _ := ctx.Value(methodKey{}).(string)
	st := status.Convert(end.Error)
	o.counter.WithLabelValues(name, st.Code().String()).Inc()
	if st.Code() == codes.Internal && strings.HasPrefix(st.Message(), undecodablePrefix) {
		o.undecodable.WithLabelValues(name).Inc()
	}
}

// Undecodable counts the requests that did not decode (for tests).
func (o *RPCOutcomes) Undecodable() *prometheus.CounterVec { return o.undecodable }

// Counter is the counter behind the handler (for tests).
func (o *RPCOutcomes) Counter() *prometheus.CounterVec { return o.counter }

// TagConn implements stats.Handler.
func (o *RPCOutcomes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (o *RPCOutcomes) HandleConn(context.Context, stats.ConnStats) {}

var _ stats.Handler = (*RPCOutcomes)(nil)

// AuthRefusals registers ranker_auth_refused_total, the calls refused for
// missing or unknown credentials or a missing role, by method (the last
// path element of a registered method) and reason.
func (m *Metrics) AuthRefusals() func(method, reason string) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ranker_auth_refused_total", Help: "gRPC calls refused by authentication or authorization, by method and reason.",
	}, []string{"method", "reason"})
	m.Registry.MustRegister(c)
	return func(method, reason string) { c.WithLabelValues(method, reason).Inc() }
}

// VersionsPerModel bounds ranker_version_scores: a model's series are kept
// for this many versions (the serving one, pins, the ones just replaced), the
// least recently scored dropped first, so nightly versions do not pile up
// series while a pinned old version keeps its own.
const VersionsPerModel = 4

type versionScores struct {
	hist *ScoreHistogram
	mu   sync.Mutex
	seen map[string][]string // model -> versions, least recently scored first
}

// ObserveAll adds scores to the histogram of one model version, dropping
// the series of the model's least recently scored version beyond
// VersionsPerModel.
func (v *versionScores) ObserveAll(model, version string, scores []float32) {
	v.mu.Lock()
	versions := v.seen[model]
	if n := len(versions); n == 0 || versions[n-1] != version { // else already the most recent
		versions = slices.DeleteFunc(versions, func(seen string) bool { return seen == version })
		versions = append(versions, version)
		for len(versions) > VersionsPerModel {
			v.hist.Delete(model, versions[0])
			versions = versions[1:]
		}
		v.seen[model] = versions
	}
	v.mu.Unlock()
	v.hist.ObserveAll(scores, model, version)
}

// ServingVersions exports, at each scrape, ranker_model_serving_info{model,
// version} = 1 for the version serving under each name: the model sync reads
// it so that it never deletes what serves. serving reports them by name.
func (m *Metrics) ServingVersions(serving func() map[string]string) {
	m.Registry.MustRegister(&servingInfo{serving: serving, desc: prometheus.NewDesc(
		"ranker_model_serving_info", "The serving version of each model (always 1).", []string{"model", "version"}, nil)})
}

type servingInfo struct {
	serving func() map[string]string
	desc    *prometheus.Desc
}

func (s *servingInfo) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s *servingInfo) Collect(ch chan<- prometheus.Metric) {
	for name, version := range s.serving() {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, 1, name, version)
	}
}

// GRPCServer registers the standard gRPC server series that stock gRPC
// dashboards and alerts read (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total,
// grpc_server_msg_sent_total, and the grpc_server_handling_seconds
// histogram, on the ranker's latency buckets), and returns their
// interceptors. They count the calls that reach a handler; the calls
// refused before (by the overload guard, or a message that does not decode)
// are in ranker_rpc_outcomes_total.
func (m *Metrics) GRPCServer() *grpcprom.ServerMetrics {
	sm := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(latencyBuckets)))
	m.Registry.MustRegister(sm)
	return sm
}
