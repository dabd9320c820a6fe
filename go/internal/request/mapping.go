package request

import (
	"math"
	"strconv"
	"strings"
	"sync"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// columnSource says where the model's feature j comes from in a request.
type columnSource struct {
	candidateColumn int    // index into Candidate.features, or -1
	contextKey      string // key of RankRequest.context_features, if candidateColumn < 0
}

// Mapping maps one request layout (feature_names plus context keys) to
// the model's feature order. Backends send the same layout on every call, so
// mappings are cached by layout.
type Mapping struct {
	sources  []columnSource
	Computed []int    // model columns the request does not send and the server computes
	Missing  []string // model features neither sent nor computable
	Ignored  []string // request features the model does not use
}

type MappingCache struct {
	mu       sync.RWMutex
	entries  map[string]*Mapping
	limit    int // layouts
	maxBytes int // bytes of keys and names held
	bytes    int
}

func NewMappingCache(limit, maxBytes int) *MappingCache {
	return &MappingCache{entries: make(map[string]*Mapping), limit: limit, maxBytes: maxBytes}
}

// size estimates the bytes a cached layout holds: its key (every name) and
// the names it lists as missing or ignored.
func (m *Mapping) size(key string) int {
	n := len(key) + 24*len(m.sources) + 8*len(m.Computed)
	for _, list := range [][]string{m.Missing, m.Ignored} {
		for _, s := range list {
			n += len(s) + 16
		}
	}
	return n
}

// layoutKey identifies a model and a request layout. Every name is length
// prefixed, so no choice of names (which may contain any byte) can make two
// different layouts share a key.
func layoutKey(modelHash string, featureNames []string, contextKeys []string) string {
	var b strings.Builder
	b.WriteString(modelHash)
	for _, list := range [][]string{featureNames, contextKeys} {
		b.WriteString(strconv.Itoa(len(list)))
		b.WriteByte(';')
		for _, n := range list {
			b.WriteString(strconv.Itoa(len(n)))
			b.WriteByte(':')
			b.WriteString(n)
		}
	}
	return b.String()
}

// Get returns the mapping of a layout; computable (nil without feature
// state) says which features the server computes itself.
func (c *MappingCache) Get(modelHash string, modelFeatures, featureNames, contextKeys []string, computable func(string) bool) *Mapping {
	key := layoutKey(modelHash, featureNames, contextKeys)
	c.mu.RLock()
	m, ok := c.entries[key]
	c.mu.RUnlock()
	if ok {
		return m
	}
	m = buildMapping(modelFeatures, featureNames, contextKeys, computable)
	size := m.size(key)
	if size > c.maxBytes/8 {
		return m // too big to keep: used for this request only
	}
	c.mu.Lock()
	if len(c.entries) >= c.limit || c.bytes+size > c.maxBytes {
		// A flood of distinct layouts is a misbehaving client; start over
		// rather than grow without bound, in count or in bytes.
		clear(c.entries)
		c.bytes = 0
	}
	if _, dup := c.entries[key]; !dup {
		c.entries[key] = m
		c.bytes += size
	}
	c.mu.Unlock()
	return m
}

func buildMapping(modelFeatures, featureNames, contextKeys []string, computable func(string) bool) *Mapping {
	column := make(map[string]int, len(featureNames))
	for i, n := range featureNames {
		column[n] = i
	}
	inContext := make(map[string]bool, len(contextKeys))
	for _, k := range contextKeys {
		inContext[k] = true
	}
	used := make(map[string]bool, len(modelFeatures))
	m := &Mapping{sources: make([]columnSource, len(modelFeatures))}
	for j, name := range modelFeatures {
		used[name] = true
		switch {
		case hasKey(column, name):
			m.sources[j] = columnSource{candidateColumn: column[name]}
		case inContext[name]:
			m.sources[j] = columnSource{candidateColumn: -1, contextKey: name}
		case computable != nil && computable(name):
			m.sources[j] = columnSource{candidateColumn: -1}
			m.Computed = append(m.Computed, j)
		default:
			m.sources[j] = columnSource{candidateColumn: -1}
			m.Missing = append(m.Missing, name)
		}
	}
	for _, n := range featureNames {
		if !used[n] {
			m.Ignored = append(m.Ignored, n)
		}
	}
	for _, k := range contextKeys {
		if !used[k] {
			m.Ignored = append(m.Ignored, k)
		}
	}
	return m
}

func hasKey(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// FillRows writes the request into rows (row-major, model order).
func FillRows(rows []float32, req *rankerv1.RankRequest, m *Mapping) {
	nan := float32(math.NaN())
	ctx := req.GetContextFeatures()
	f := len(m.sources)
	for i, c := range req.GetCandidates() {
		values := c.GetFeatures()
		row := rows[i*f : (i+1)*f]
		for j, src := range m.sources {
			switch {
			case src.candidateColumn >= 0:
				row[j] = values[src.candidateColumn]
			case src.contextKey != "":
				row[j] = ctx[src.contextKey]
			default:
				row[j] = nan
			}
		}
	}
}
