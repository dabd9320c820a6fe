// Package config reads the server's settings from flags, with an environment
// variable for each (RANKER_ plus the flag name in upper case, dashes as
// underscores). A flag on the command line wins over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"runtime"
	"strings"
	"time"

	"ranker/internal/exploration"
	"ranker/internal/features"
	"ranker/internal/features/kafkastate"
	"ranker/internal/model"
	"ranker/internal/registry"
	"ranker/internal/treeensemble"
)

// Config is everything the server needs to start.
type Config struct {
	Listen              string
	Model               string
	ModelRoot           string
	DefaultModel        string
	ReloadInterval      time.Duration
	MetricsListen       string
	ExperimentConfig    string
	ExposureDir         string
	ExposureBuffer      int
	ExposureMaxBytes    int64
	ExposureMaxFiles    int
	StateDir            string
	State               string
	StateTimeout        time.Duration
	StateRedisVolatile  bool
	StatePeerListen     string
	StatePeers          []string
	EventLateness       time.Duration
	EventClockSkew      time.Duration
	EmbeddingDimensions int
	OTLPEndpoint        string
	TraceSampleRatio    float64
	Backend             string
	ORTLib              string
	ORTThreads          int
	ScoringPath         string
	MaxCandidates       int
	MaxFeatures         int
	MaxRecvBytes        int
	MaxStreams          int
	MaxInflight         int
	MaxConnections      int
	RequestReadTimeout  time.Duration
	ShedHeapBytes       int64
	ShedWritesHeapBytes int64
	ShedUnreadyAfter    time.Duration
	MaxScoring          int
	SplitMinRows        int
	MaxQueue            int
	QueueTimeout        time.Duration
	MaxRequestMemory    int64
	DrainDelay          time.Duration
	ConnMaxAge          time.Duration
	ConnMaxIdle         time.Duration
	ShutdownTimeout     time.Duration
	LogLevel            slog.Level
	TLSCert             string
	TLSKey              string
	TLSClientCA         string
	AuthTokens          string
	Reflection          bool
	Strict              bool
	Exploration         exploration.Policy
	ModelLoadTimeout    time.Duration
	ModelLimits         model.Limits
}

// defaultSplitMinRows is the smallest part of a request scored on a core of
// its own: below it, the handoff between goroutines (a few microseconds)
// costs about what a second core saves on the smallest models.
const defaultSplitMinRows = 64

// EnvName is the environment variable that sets a flag.
func EnvName(flagName string) string {
	return "RANKER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Load parses args (without the program name) and the environment.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	var c Config
	var logLevel string
	fs := flag.NewFlagSet("ranker-server", flag.ContinueOnError)
	fs.SetOutput(usage)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:50051", "gRPC listen address (host:port)")
	fs.StringVar(&c.Model, "model", "", "one model: a version directory (fixed), or a model directory whose newest version serves and is hot-swapped")
	fs.StringVar(&c.ModelRoot, "model-root", "", "serve every model under this root (<root>/<name>/<version>), hot-swapping new versions")
	fs.StringVar(&c.DefaultModel, "default-model", "", "model for requests that name none and run no experiment (default: first name)")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", 5*time.Second, "how often to look for new model versions and experiment config; 0 disables")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "127.0.0.1:9464", "Prometheus /metrics address; empty disables")
	fs.StringVar(&c.ExperimentConfig, "experiment-config", "", "experiment YAML (reloaded when it changes)")
	fs.StringVar(&c.ExposureDir, "exposure-dir", "", "directory for the exposure log; empty disables")
	fs.IntVar(&c.ExposureBuffer, "exposure-buffer", 10000, "exposure records waiting to be written before new ones are dropped")
	fs.Int64Var(&c.ExposureMaxBytes, "exposure-max-bytes", 64<<20, "exposure file size that starts a new file")
	fs.IntVar(&c.ExposureMaxFiles, "exposure-max-files", 50, "rotated exposure files kept (ship them off before they age out)")
	fs.StringVar(&c.StateDir, "state-dir", "", "directory of the durable feature state (catalog and events, an append-only log synced before each acknowledgement); empty keeps it in memory only, lost on restart")
	fs.StringVar(&c.State, "state", "", "where the feature state lives: empty for the embedded state (see --state-dir); redis://host:port/db to share it between replicas; or kafka://host:port[,host:port...]/topic[?replication=3&min_insync=2&retention=168h] for replicas that each keep the whole state in memory and follow one replicated topic (--state-dir then keeps a snapshot, so a restart applies only newer records; a topic the server creates keeps records for retention, 7 days by default, at least 1h, or forever; see --state-peers)")
	fs.StringVar(&c.StatePeerListen, "state-peer-listen", "", "Kafka state only: address serving this replica's snapshot to the other replicas (GET "+kafkastate.SnapshotPath+"), so that a new one boots from it; it holds every reader's history, so only the replicas may reach it (not the metrics port); empty disables")
	var statePeers string
	fs.StringVar(&statePeers, "state-peers", "", "Kafka state only: the replicas' snapshot servers, http://host:port,... (their --state-peer-listen; this replica's own may be among them), asked in order when this replica has no snapshot the topic continues (a new pod, a lost volume)")
	fs.BoolVar(&c.StateRedisVolatile, "state-redis-volatile", false, "accept a Redis state (--state=redis://...) that does not append and fsync each write before answering (appendonly yes, appendfsync always); acknowledged events may then be lost when Redis stops: tests and development only")
	fs.DurationVar(&c.StateTimeout, "state-timeout", 250*time.Millisecond, "bound on each call to a Redis state; past it, Rank scores the state's features as missing (a Kafka state answers Rank from memory; its writes are bound by the caller's deadline)")
	fs.DurationVar(&c.EventLateness, "event-lateness", 24*time.Hour, "events older than the newest recorded event by more than this are refused")
	fs.DurationVar(&c.EventClockSkew, "event-clock-skew", 5*time.Minute, "events later than the server clock by more than this are refused")
	fs.IntVar(&c.EmbeddingDimensions, "embedding-dimensions", features.DefaultEmbeddingDimensions, fmt.Sprintf("components of an article's title embedding (UpsertArticles articles.embedding), those of the embedding model the semantic features were trained with; an article sends exactly this many or none (at most %d)", features.MaxEmbeddingDimensions))
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC trace collector (host:port); empty disables tracing export")
	fs.Float64Var(&c.TraceSampleRatio, "trace-sample-ratio", 0.01, "share of requests traced when exporting (parent decisions win)")
	fs.StringVar(&c.Backend, "backend", "native", "scoring backend: native (pure Go, the default) or onnxruntime (the reference)")
	fs.StringVar(&c.ORTLib, "ort-lib", "", "path to libonnxruntime.so, for the onnxruntime backend; `ranker ort-lib` prints the one in the pinned wheel")
	fs.StringVar(&c.ScoringPath, "scoring-path", treeensemble.SIMDAuto, "vector level of the native backend: auto (the fastest this CPU runs), avx512 (16 rows per pass), avx2 (8) or scalar; every level scores to the same bit")
	fs.IntVar(&c.ORTThreads, "ort-threads", 1, "onnxruntime intra-op threads per scoring call; requests already run in parallel, and more than 1 changes the summation order, so scores may move by an ulp from the golden ones")
	fs.IntVar(&c.MaxCandidates, "max-candidates", 2000, "most candidates in one Rank request (more: RESOURCE_EXHAUSTED)")
	fs.IntVar(&c.MaxFeatures, "max-features", 512, "most feature names plus context features in one request (more: RESOURCE_EXHAUSTED)")
	fs.IntVar(&c.MaxRecvBytes, "max-recv-bytes", 8<<20, "largest request message in bytes (the largest valid by-features request, 2000 candidates x 512 features, is about 4.5 MB)")
	fs.IntVar(&c.MaxStreams, "max-concurrent-streams", 256, "most requests in flight on one connection (HTTP/2 streams); more wait for a free one")
	fs.IntVar(&c.MaxInflight, "max-inflight", 1024, "most calls open at once across all connections; more are refused at once with RESOURCE_EXHAUSTED")
	fs.IntVar(&c.MaxConnections, "max-connections", 4096, "most client connections open at once; more wait in the listen backlog")
	fs.DurationVar(&c.RequestReadTimeout, "request-read-timeout", 10*time.Second, "a call whose request message has not arrived this long after its headers is ended (a held half-open stream)")
	fs.Int64Var(&c.ShedHeapBytes, "shed-heap-bytes", 0, "refuse new calls, Rank included (RESOURCE_EXHAUSTED), while the live heap is at least this many bytes; 0: 75% of GOMEMLIMIT when set, else never")
	fs.Int64Var(&c.ShedWritesHeapBytes, "shed-writes-heap-bytes", 0, "refuse RecordEvents and UpsertArticles (RESOURCE_EXHAUSTED), still answering Rank, while the live heap is at least this many bytes; from there on the state is pruned and garbage collected; 0: 80% of --shed-heap-bytes (60% of GOMEMLIMIT)")
	fs.DurationVar(&c.ShedUnreadyAfter, "shed-unready-after", 10*time.Second, "report ranker.v1.RankingService NOT_SERVING once the heap has stayed over --shed-heap-bytes this long after a prune and collection, SERVING again once under")
	fs.IntVar(&c.MaxScoring, "max-scoring", 4*runtime.GOMAXPROCS(0), "most Rank requests computing features and scoring at once (default: 4 per core the process may use)")
	fs.IntVar(&c.SplitMinRows, "split-min-rows", defaultSplitMinRows, "score a request's candidates on the cores no other request is using, in parts of at least this many rows; under load every core has a request and nothing is split (0: never split)")
	fs.IntVar(&c.MaxQueue, "max-queue", 128, "most Rank requests waiting for a scoring slot; more are refused at once with RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.QueueTimeout, "queue-timeout", 200*time.Millisecond, "longest wait for a scoring slot before RESOURCE_EXHAUSTED")
	fs.Int64Var(&c.MaxRequestMemory, "max-request-memory", 32<<20, "most bytes one Rank request may need to score (candidates x model features); more: RESOURCE_EXHAUSTED")
	fs.DurationVar(&c.DrainDelay, "drain-delay", time.Second, "after SIGTERM, how long the server keeps accepting connections (health NOT_SERVING, requests answered) before draining; part of --shutdown-timeout, and at most half of it")
	fs.DurationVar(&c.ConnMaxAge, "max-connection-age", 5*time.Minute, "close connections this old (after a 30 s grace), so clients reconnect and load spreads to new pods")
	fs.DurationVar(&c.ConnMaxIdle, "max-connection-idle", 5*time.Minute, "close connections idle this long")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may drain after SIGTERM")
	limits := model.DefaultLimits()
	fs.DurationVar(&c.ModelLoadTimeout, registry.FlagLoadTimeout, registry.DefaultLoadTimeout, "longest one model version may take to load and self-check; past it the version is refused")
	fs.Int64Var(&c.ModelLimits.MaxFileBytes, model.FlagMaxFileBytes, limits.MaxFileBytes, "largest file of a model version, in bytes; a larger one refuses the version")
	fs.IntVar(&c.ModelLimits.MaxTrees, model.FlagMaxTrees, limits.MaxTrees, "most trees in a model; more refuses the version")
	fs.IntVar(&c.ModelLimits.MaxNodes, model.FlagMaxNodes, limits.MaxNodes, "most tree nodes (leaves included) in a model; more refuses the version")
	fs.IntVar(&c.ModelLimits.MaxDepth, model.FlagMaxDepth, limits.MaxDepth, "most splits on one root-to-leaf path of a tree; deeper refuses the version")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate chain; with --tls-key the server speaks TLS (both reloaded when they change)")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA bundle; client certificates are then required and verified (mutual TLS), reloaded when it changes")
	fs.StringVar(&c.AuthTokens, "auth-tokens", "", "callers and their roles, one per line: name role[,role...] sha256:<hex of token>|cert:<CN or URI SAN>; empty: no authorization")
	fs.BoolVar(&c.Strict, "strict", false, "refuse (INVALID_ARGUMENT) Rank requests that lack a model feature (neither sent nor computed by the server) or send a name the model does not use; a request's strictness field overrides this default")
	fs.Float64Var(&c.Exploration.SharePercent, "exploration-share", 0, "percent of Rank requests (0 to 100, two decimals) whose top places are shuffled (policy shuffle-top, seeded by the request id), each shown item's propensity logged in the exposure record; 0 is off. An experiment variant's exploration: overrides it")
	fs.IntVar(&c.Exploration.Depth, "exploration-depth", exploration.DefaultDepth, "how many top places an explored request shuffles (at least 2)")
	fs.BoolVar(&c.Reflection, "reflection", false, "serve the gRPC reflection service (grpcurl without .proto files); needs the info role when --auth-tokens is set")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(usage, "usage: ranker-server [flags]; every flag can also be set as RANKER_<FLAG>, e.g. RANKER_ORT_LIB")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || envErr != nil {
			return
		}
		if v := getenv(EnvName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return Config{}, envErr
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return Config{}, fmt.Errorf("log-level: %w", err)
	}
	for peer := range strings.SplitSeq(statePeers, ",") {
		if peer = strings.TrimSpace(peer); peer != "" {
			c.StatePeers = append(c.StatePeers, peer)
		}
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	if (c.Model == "") == (c.ModelRoot == "") {
		errs = append(errs, errors.New("model: set exactly one of --model (RANKER_MODEL) and --model-root (RANKER_MODEL_ROOT)"))
	}
	if c.ExposureBuffer < 1 || c.ExposureMaxBytes < 1024 || c.ExposureMaxFiles < 1 {
		errs = append(errs, fmt.Errorf("exposure-buffer %d, exposure-max-bytes %d, exposure-max-files %d: must be at least 1, 1024 and 1",
			c.ExposureBuffer, c.ExposureMaxBytes, c.ExposureMaxFiles))
	}
	if c.Backend != "native" && c.Backend != "onnxruntime" {
		errs = append(errs, fmt.Errorf("backend: %q, want native or onnxruntime", c.Backend))
	}
	if _, err := treeensemble.ResolveSIMD(c.ScoringPath); err != nil {
		errs = append(errs, fmt.Errorf("scoring-path: %w", err))
	}
	if c.Backend == "onnxruntime" && c.ORTLib == "" {
		errs = append(errs, errors.New("ort-lib: required by the onnxruntime backend (--ort-lib or RANKER_ORT_LIB)"))
	}
	if c.EmbeddingDimensions < 1 || c.EmbeddingDimensions > features.MaxEmbeddingDimensions {
		errs = append(errs, fmt.Errorf("embedding-dimensions: %d, want 1 to %d", c.EmbeddingDimensions, features.MaxEmbeddingDimensions))
	}
	c.ModelLimits.EmbeddingDimensions = c.EmbeddingDimensions // a model trained on another width is refused
	if c.ORTThreads < 1 {
		errs = append(errs, fmt.Errorf("ort-threads: %d, must be at least 1", c.ORTThreads))
	}
	if c.MaxCandidates < 1 {
		errs = append(errs, fmt.Errorf("max-candidates: %d, must be at least 1", c.MaxCandidates))
	}
	if c.MaxFeatures < 1 {
		errs = append(errs, fmt.Errorf("max-features: %d, must be at least 1", c.MaxFeatures))
	}
	if c.MaxRecvBytes < 1024 {
		errs = append(errs, fmt.Errorf("max-recv-bytes: %d, must be at least 1024", c.MaxRecvBytes))
	}
	if c.ShedWritesHeapBytes < 0 || c.ShedUnreadyAfter < 0 {
		errs = append(errs, fmt.Errorf("shed-writes-heap-bytes %d, shed-unready-after %v: must be at least 0", c.ShedWritesHeapBytes, c.ShedUnreadyAfter))
	}
	if c.MaxConnections < 1 || c.RequestReadTimeout < 0 || c.ShedHeapBytes < 0 {
		errs = append(errs, fmt.Errorf("max-connections %d, request-read-timeout %v, shed-heap-bytes %d: must be at least 1, 0 and 0",
			c.MaxConnections, c.RequestReadTimeout, c.ShedHeapBytes))
	}
	if c.MaxInflight < 1 || c.MaxScoring < 1 || c.MaxQueue < 0 || c.QueueTimeout <= 0 || c.MaxRequestMemory < 1<<20 {
		errs = append(errs, fmt.Errorf("max-inflight %d, max-scoring %d, max-queue %d, queue-timeout %v, max-request-memory %d: must be at least 1, 1, 0, positive and 1 MiB",
			c.MaxInflight, c.MaxScoring, c.MaxQueue, c.QueueTimeout, c.MaxRequestMemory))
	}
	if c.SplitMinRows < 0 {
		errs = append(errs, fmt.Errorf("split-min-rows: %d, must not be negative (0 never splits)", c.SplitMinRows))
	}
	if c.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("drain-delay: %v, must not be negative", c.DrainDelay))
	}
	if c.ModelLoadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s: %v, must be positive", registry.FlagLoadTimeout, c.ModelLoadTimeout))
	}
	if l := c.ModelLimits; l.MaxFileBytes < 1 || l.MaxTrees < 1 || l.MaxNodes < 1 || l.MaxDepth < 1 {
		errs = append(errs, fmt.Errorf("%s %d, %s %d, %s %d, %s %d: each must be at least 1", model.FlagMaxFileBytes, l.MaxFileBytes,
			model.FlagMaxTrees, l.MaxTrees, model.FlagMaxNodes, l.MaxNodes, model.FlagMaxDepth, l.MaxDepth))
	}
	if err := exploration.ValidateShare(c.Exploration.SharePercent); err != nil {
		errs = append(errs, fmt.Errorf("exploration-share: %w", err))
	}
	if err := exploration.ValidateDepth(c.Exploration.Depth); err != nil {
		errs = append(errs, fmt.Errorf("exploration-depth: %w", err))
	}
	if (c.StatePeerListen != "" || len(c.StatePeers) > 0) && !strings.HasPrefix(c.State, "kafka://") {
		errs = append(errs, errors.New("state-peer-listen, state-peers: only a Kafka state (--state=kafka://...) serves or loads a peer's snapshot"))
	}
	for _, peer := range c.StatePeers {
		if u, err := url.Parse(peer); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			errs = append(errs, fmt.Errorf("state-peers: %q, want http://host:port", peer))
		}
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout: %v, must be positive", c.ShutdownTimeout))
	}
	if c.AuthTokens != "" && c.TLSCert == "" && !loopback(c.Listen) {
		errs = append(errs, fmt.Errorf("auth-tokens: tokens would travel in clear to %s; set --tls-cert and --tls-key, or listen on loopback", c.Listen))
	}
	return errors.Join(errs...)
}

// loopback reports whether a listen address accepts only local connections
// (an empty host listens on every interface).
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
