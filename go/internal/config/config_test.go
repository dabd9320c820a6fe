package config

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestFlagsEnvironmentAndDefaults(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		vars  map[string]string
		check func(t *testing.T, c Config)
	}{
		{"defaults", []string{"--model=m"}, nil, func(t *testing.T, c Config) {
			if c.Listen != "127.0.0.1:50051" || c.MaxCandidates != 2000 || c.ORTThreads != 1 || c.ShutdownTimeout != 10*time.Second {
				t.Errorf("got %+v", c)
			}
			if c.ScoringPath != "auto" {
				t.Errorf("scoring path: got %q, want auto", c.ScoringPath)
			}
			if c.EmbeddingDimensions != 512 {
				t.Errorf("embedding dimensions: got %d, want 512", c.EmbeddingDimensions)
			}
			if c.MaxScoring < 4 || c.MaxInflight != 1024 || c.MaxRequestMemory != 32<<20 || c.DrainDelay != time.Second || c.Reflection || c.Strict {
				t.Errorf("bounds: got %+v", c)
			}
		}},
		{"exploration is off by default, depth 10", []string{"--model=m"}, nil, func(t *testing.T, c Config) {
			if c.Exploration.SharePercent != 0 || c.Exploration.Depth != 10 || c.Exploration.On() {
				t.Errorf("exploration: got %+v, want share 0 (off), depth 10", c.Exploration)
			}
		}},
		{"exploration", []string{"--model=m", "--exploration-share=2.5", "--exploration-depth=4"}, nil, func(t *testing.T, c Config) {
			if c.Exploration.SharePercent != 2.5 || c.Exploration.Depth != 4 {
				t.Errorf("exploration: got %+v, want share 2.5, depth 4", c.Exploration)
			}
		}},
		{"strict", []string{"--model=m", "--strict"}, nil, func(t *testing.T, c Config) {
			if !c.Strict {
				t.Errorf("--strict: got Strict false")
			}
		}},
		{"environment sets a flag", nil, map[string]string{"RANKER_MODEL": "from-env", "RANKER_MAX_CANDIDATES": "7", "RANKER_SHUTDOWN_TIMEOUT": "3s"}, func(t *testing.T, c Config) {
			if c.Model != "from-env" || c.MaxCandidates != 7 || c.ShutdownTimeout != 3*time.Second {
				t.Errorf("got %+v", c)
			}
		}},
		{"flag wins over environment", []string{"--model=from-flag", "--ort-lib=/lib.so"}, map[string]string{"RANKER_MODEL": "from-env", "RANKER_ORT_LIB": "/env.so"}, func(t *testing.T, c Config) {
			if c.Model != "from-flag" || c.ORTLib != "/lib.so" {
				t.Errorf("got model %q lib %q, want the flags", c.Model, c.ORTLib)
			}
		}},
		{"scoring path", []string{"--model=m"}, map[string]string{"RANKER_SCORING_PATH": "scalar"}, func(t *testing.T, c Config) {
			if c.ScoringPath != "scalar" {
				t.Errorf("got scoring path %q, want scalar", c.ScoringPath)
			}
		}},
		{"state peers", []string{"--model=m", "--state=kafka://k:9092/t", "--state-peer-listen=:9094"},
			map[string]string{"RANKER_STATE_PEERS": "http://ranker-0.ranker:9094, http://ranker-1.ranker:9094,"}, func(t *testing.T, c Config) {
				if c.StatePeerListen != ":9094" || !slices.Equal(c.StatePeers, []string{"http://ranker-0.ranker:9094", "http://ranker-1.ranker:9094"}) {
					t.Errorf("got listen %q, peers %q", c.StatePeerListen, c.StatePeers)
				}
			}},
		{"log level", []string{"--model=m", "--log-level=debug"}, nil, func(t *testing.T, c Config) {
			if c.LogLevel.String() != "DEBUG" {
				t.Errorf("got %v, want DEBUG", c.LogLevel)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(tt.args, env(tt.vars), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

func TestBadSettingsAreNamed(t *testing.T) {
	tests := []struct {
		args []string
		vars map[string]string
		want string
	}{
		{nil, nil, "model: set exactly one"},
		{[]string{"--model=m", "--model-root=r"}, nil, "model: set exactly one"},
		{[]string{"--model=m", "--max-candidates=0"}, nil, "max-candidates: 0"},
		{[]string{"--model=m", "--ort-threads=0"}, nil, "ort-threads: 0"},
		{[]string{"--model=m", "--scoring-path=sse4"}, nil, `scoring-path: "sse4": want auto, avx512, avx2 or scalar`},
		{[]string{"--model=m"}, map[string]string{"RANKER_MAX_FEATURES": "many"}, "RANKER_MAX_FEATURES=\"many\""},
		{[]string{"--model=m", "--log-level=loud"}, nil, "log-level"},
		{[]string{"--model=m", "stray"}, nil, "unexpected arguments"},
		{[]string{"--model=m", "--shutdown-timeout=0s"}, nil, "shutdown-timeout"},
		{[]string{"--model=m", "--max-inflight=0"}, nil, "max-inflight 0"},
		{[]string{"--model=m", "--max-scoring=0"}, nil, "max-scoring 0"},
		{[]string{"--model=m", "--queue-timeout=0s"}, nil, "queue-timeout 0s"},
		{[]string{"--model=m", "--max-request-memory=1000"}, nil, "max-request-memory 1000"},
		{[]string{"--model=m", "--drain-delay=-1s"}, nil, "drain-delay: -1s"},
		{[]string{"--model=m", "--model-max-trees=0"}, nil, "model-max-trees 0"},
		{[]string{"--model=m", "--model-load-timeout=0s"}, nil, "model-load-timeout"},
		{[]string{"--model=m", "--embedding-dimensions=0"}, nil, "embedding-dimensions: 0, want 1 to 4096"},
		{[]string{"--model=m", "--embedding-dimensions=4097"}, nil, "embedding-dimensions: 4097"},
		{[]string{"--model=m", "--exploration-share=100.5"}, nil, "exploration-share: 100.5, want a percentage from 0 to 100 with at most two decimals"},
		{[]string{"--model=m", "--exploration-share=0.125"}, nil, "exploration-share: 0.125,"},
		{[]string{"--model=m"}, map[string]string{"RANKER_EXPLORATION_SHARE": "-2"}, "exploration-share: -2,"},
		{[]string{"--model=m", "--exploration-depth=1"}, nil, "exploration-depth: 1, want at least 2"},
		{[]string{"--model=m", "--state-peer-listen=:9094"}, nil, "state-peer-listen, state-peers: only a Kafka state"},
		{[]string{"--model=m", "--state-peers=http://ranker-0.ranker:9094"}, map[string]string{"RANKER_STATE": "redis://r:6379/0"}, "only a Kafka state"},
		{[]string{"--model=m", "--state=kafka://k:9092/t", "--state-peers=http://a:9094,ranker-1.ranker:9094"}, nil, `state-peers: "ranker-1.ranker:9094", want http://host:port`},
		{[]string{"--model=m", "--state=kafka://k:9092/t", "--state-peers=http://a:9094/state/snapshot"}, nil, `state-peers: "http://a:9094/state/snapshot"`},
	}
	for _, tt := range tests {
		_, err := Load(tt.args, env(tt.vars), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%v, %v): got %v, want an error containing %q", tt.args, tt.vars, err, tt.want)
		}
	}
}

func TestEnvName(t *testing.T) {
	if got, want := EnvName("max-recv-bytes"), "RANKER_MAX_RECV_BYTES"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}
