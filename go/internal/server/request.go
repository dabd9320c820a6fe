package server

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// maxUserIDBytes bounds user_id, as the feature state bounds the ids it stores.
const maxUserIDBytes = 256

// maxNameBytes bounds a feature name or a context key; maxCandidateIDBytes a
// candidate id. Error messages quote at most quoteBytes of what a caller sent.
const (
	maxNameBytes        = 256
	maxCandidateIDBytes = 1024
	quoteBytes          = 64
)

// quote is %q of s cut to quoteBytes, so an error never echoes a huge string.
func quote(s string) string {
	if len(s) <= quoteBytes {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:quoteBytes]) + fmt.Sprintf("... (%d bytes)", len(s))
}

// Limits bound the work one request may ask for.
type Limits struct {
	MaxCandidates int
	MaxFeatures   int
	// MaxRequestMemory bounds a request's estimated working memory in bytes
	// (0: unbounded).
	MaxRequestMemory int64
}

// columnSource says where the model's feature j comes from in a request.
type columnSource struct {
	candidateColumn int    // index into Candidate.features, or -1
	contextKey      string // key of RankRequest.context_features, if candidateColumn < 0
}

// columnMapping maps one request layout (feature_names plus context keys) to
// the model's feature order. Backends send the same layout on every call, so
// mappings are cached by layout.
type columnMapping struct {
	sources  []columnSource
	computed []int    // model columns the request does not send and the server computes
	missing  []string // model features neither sent nor computable
	ignored  []string // request features the model does not use
}

type mappingCache struct {
	mu       sync.RWMutex
	entries  map[string]*columnMapping
	limit    int // layouts
	maxBytes int // bytes of keys and names held
	bytes    int
}

func newMappingCache(limit, maxBytes int) *mappingCache {
	return &mappingCache{entries: make(map[string]*columnMapping), limit: limit, maxBytes: maxBytes}
}

// size estimates the bytes a cached layout holds: its key (every name) and
// the names it lists as missing or ignored.
func (m *columnMapping) size(key string) int {
	n := len(key) + 24*len(m.sources) + 8*len(m.computed)
	for _, list := range [][]string{m.missing, m.ignored} {
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

// get returns the mapping of a layout; computable (nil without feature
// state) says which features the server computes itself.
func (c *mappingCache) get(modelHash string, modelFeatures, featureNames, contextKeys []string, computable func(string) bool) *columnMapping {
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

func buildMapping(modelFeatures, featureNames, contextKeys []string, computable func(string) bool) *columnMapping {
	column := make(map[string]int, len(featureNames))
	for i, n := range featureNames {
		column[n] = i
	}
	inContext := make(map[string]bool, len(contextKeys))
	for _, k := range contextKeys {
		inContext[k] = true
	}
	used := make(map[string]bool, len(modelFeatures))
	m := &columnMapping{sources: make([]columnSource, len(modelFeatures))}
	for j, name := range modelFeatures {
		used[name] = true
		switch {
		case hasKey(column, name):
			m.sources[j] = columnSource{candidateColumn: column[name]}
		case inContext[name]:
			m.sources[j] = columnSource{candidateColumn: -1, contextKey: name}
		case computable != nil && computable(name):
			m.sources[j] = columnSource{candidateColumn: -1}
			m.computed = append(m.computed, j)
		default:
			m.sources[j] = columnSource{candidateColumn: -1}
			m.missing = append(m.missing, name)
		}
	}
	for _, n := range featureNames {
		if !used[n] {
			m.ignored = append(m.ignored, n)
		}
	}
	for _, k := range contextKeys {
		if !used[k] {
			m.ignored = append(m.ignored, k)
		}
	}
	return m
}

func hasKey(m map[string]int, k string) bool {
	_, ok := m[k]
	return ok
}

// validate checks a request against the limits and the contract in
// proto/ranker/v1/ranking_service.proto. It returns the context keys sorted,
// so the layout key does not depend on map order.
func validate(req *rankerv1.RankRequest, limits Limits, devices []string, idSets *sync.Pool) ([]string, error) {
	if len(req.GetCandidates()) == 0 {
		return nil, invalid("candidates: at least one candidate is required")
	}
	if n := len(req.GetCandidates()); n > limits.MaxCandidates {
		return nil, overLimit("candidates", int64(n), int64(limits.MaxCandidates), "max-candidates", "%d candidates", n)
	}
	names := req.GetFeatureNames()
	if n := len(names) + len(req.GetContextFeatures()); n > limits.MaxFeatures {
		return nil, overLimit("feature_names", int64(n), int64(limits.MaxFeatures), "max-features", "%d features (with context_features)", n)
	}
	seen := make(map[string]int, len(names))
	for i, n := range names {
		if n == "" {
			return nil, invalid("feature_names[%d]: empty name", i)
		}
		if len(n) > maxNameBytes {
			return nil, invalid("feature_names[%d]: %d bytes, more than %d", i, len(n), maxNameBytes)
		}
		if first, dup := seen[n]; dup {
			return nil, invalid("feature_names[%d]: %s repeats feature_names[%d]", i, quote(n), first)
		}
		seen[n] = i
	}
	keys := make([]string, 0, len(req.GetContextFeatures()))
	for k, v := range req.GetContextFeatures() {
		if k == "" {
			return nil, invalid("context_features: empty key")
		}
		if len(k) > maxNameBytes {
			return nil, invalid("context_features[%s]: key of %d bytes, more than %d", quote(k), len(k), maxNameBytes)
		}
		if i, dup := seen[k]; dup {
			return nil, invalid("context_features[%s]: also declared as feature_names[%d]", quote(k), i)
		}
		if math.IsInf(float64(v), 0) {
			return nil, invalid("context_features[%s]: %v is not allowed; send NaN or leave it out for missing", quote(k), v)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if n := len(req.GetUserId()); n > maxUserIDBytes {
		return nil, invalid("user_id: %d bytes, more than %d", n, maxUserIDBytes)
	}
	if n := len(req.GetModelName()); n > maxNameBytes {
		return nil, invalid("model_name: %d bytes, more than %d", n, maxNameBytes)
	}
	if n := len(req.GetModelVersion()); n > maxNameBytes {
		return nil, invalid("model_version: %d bytes, more than %d", n, maxNameBytes)
	}
	if st := req.GetStrictness(); rankerv1.Strictness_name[int32(st)] == "" {
		return nil, invalid("strictness: %d is not a Strictness value", int32(st))
	}
	if n := len(req.GetRequestId()); n > maxNameBytes { // echoed in the reply, logs and exposures
		return nil, invalid("request_id: %d bytes, more than %d", n, maxNameBytes)
	}
	if n := len(req.GetExperimentVariant()); n > maxNameBytes {
		return nil, invalid("experiment_variant: %d bytes, more than %d", n, maxNameBytes)
	}
	if d := req.GetDevice(); d != "" && !slices.Contains(devices, d) {
		return nil, invalid("device: %s is not one of %v", quote(d), devices)
	}
	if t := req.GetEventTime(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, invalid("event_time: %v", err)
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
			return nil, invalid("candidates[%d].id: empty id", i)
		}
		if len(c.GetId()) > maxCandidateIDBytes {
			return nil, invalid("candidates[%d].id: %d bytes, more than %d", i, len(c.GetId()), maxCandidateIDBytes)
		}
		if first, dup := ids[c.GetId()]; dup {
			return nil, invalid("candidates[%d].id: %s repeats candidates[%d].id", i, quote(c.GetId()), first)
		}
		ids[c.GetId()] = i
		if len(c.GetFeatures()) != len(names) {
			return nil, invalid("candidates[%d].features: %d values, feature_names declares %d", i, len(c.GetFeatures()), len(names))
		}
		for j, v := range c.GetFeatures() {
			if math.IsInf(float64(v), 0) {
				return nil, invalid("candidates[%d].features[%d] (%s): %v is not allowed; send NaN for missing", i, j, names[j], v)
			}
		}
	}
	return keys, nil
}

// fillRows writes the request into rows (row-major, model order).
func fillRows(rows []float32, req *rankerv1.RankRequest, m *columnMapping) {
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

// rankOrder returns candidate indices best first; equal scores keep request
// order, and NaN scores (which a sound model never gives) sort last.
func rankOrder(scores []float32) []int {
	return topOrder(scores, len(scores))
}

// topOrder returns the indices of the k best candidates, best first, in the
// order rankOrder gives them. Each candidate is one uint64 whose order is the
// ranking (the score's order-preserving bits above the index), so the sort
// compares plain integers, and no two keys are equal: the result does not
// depend on the sorting algorithm. For k well below n, only a heap of the k
// best is kept in order (O(n log k)).
func topOrder(scores []float32, k int) []int {
	n := len(scores)
	k = min(k, n)
	keys := make([]uint64, n)
	for i, s := range scores {
		keys[i] = rankKey(s, i)
	}
	if k < n/4 {
		keys = smallestKeys(keys, k)
	}
	slices.Sort(keys)
	order := make([]int, k)
	for r := range order {
		order[r] = int(uint32(keys[r]))
	}
	return order
}

// rankKey orders candidates best first by its value: higher scores give
// smaller keys, equal scores (-0 equals +0) fall back on the index, NaN
// comes after every number.
func rankKey(score float32, index int) uint64 {
	var ordered uint32 // increases with the score
	switch {
	case score != score:
		return math.MaxUint32<<32 | uint64(uint32(index))
	case score == 0:
		ordered = 1 << 31
	default:
		bits := math.Float32bits(score)
		if bits>>31 == 1 {
			ordered = ^bits
		} else {
			ordered = bits | 1<<31
		}
	}
	// ^ordered for the highest number is still below a NaN's all ones: a
	// number's ordered bits are never 0 (that would be a negative NaN).
	return uint64(^ordered)<<32 | uint64(uint32(index))
}

// smallestKeys returns the k smallest keys, in no particular order, keeping
// them in a max-heap over the first k places of keys.
func smallestKeys(keys []uint64, k int) []uint64 {
	if k == 0 {
		return keys[:0]
	}
	heap := keys[:k]
	for i := k/2 - 1; i >= 0; i-- {
		siftDown(heap, i)
	}
	for _, key := range keys[k:] {
		if key < heap[0] {
			heap[0] = key
			siftDown(heap, 0)
		}
	}
	return heap
}

// siftDown restores the max-heap order below i.
func siftDown(heap []uint64, i int) {
	for {
		largest, l, r := i, 2*i+1, 2*i+2
		if l < len(heap) && heap[l] > heap[largest] {
			largest = l
		}
		if r < len(heap) && heap[r] > heap[largest] {
			largest = r
		}
		if largest == i {
			return
		}
		heap[i], heap[largest] = heap[largest], heap[i]
		i = largest
	}
}

func describeLimits(l Limits) string {
	return fmt.Sprintf("max %d candidates, %d features, %d bytes of working memory", l.MaxCandidates, l.MaxFeatures, l.MaxRequestMemory)
}
