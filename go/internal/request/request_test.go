package request

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestRankOrderPutsNaNLastAndKeepsTies(t *testing.T) {
	nan := float32(math.NaN())
	tests := []struct {
		scores []float32
		want   []int
	}{
		{[]float32{1, 3, 2}, []int{1, 2, 0}},
		{[]float32{2, 2, 1, 2}, []int{0, 1, 3, 2}},
		{[]float32{nan, 1, nan, 2}, []int{3, 1, 0, 2}},
		{[]float32{-1, -1e-30, 0}, []int{2, 1, 0}},
	}
	for _, tt := range tests {
		if got := RankOrder(tt.scores); !slices.Equal(got, tt.want) {
			t.Errorf("RankOrder(%v): got %v, want %v", tt.scores, got, tt.want)
		}
	}
}

// TestTopOrderMatchesStableSort holds the integer-key ranking and its top-k
// heap to the definition: a stable sort by score, best first, NaN last, for
// every k, over scores with many ties, signed zeros, infinities and NaNs.
func TestTopOrderMatchesStableSort(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	pool := []float32{nan, -inf, inf, 0, float32(math.Copysign(0, -1)), 1, -1, 1e-38, -1e-45, 1e-45, 3.5, math.MaxFloat32, -math.MaxFloat32}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 7, 64, 1000} {
		scores := make([]float32, n)
		for i := range scores {
			if rng.IntN(2) == 0 {
				scores[i] = pool[rng.IntN(len(pool))]
			} else {
				scores[i] = float32(rng.NormFloat64())
			}
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		slices.SortStableFunc(want, func(a, b int) int {
			sa, sb := scores[a], scores[b]
			switch {
			case sa != sa && sb != sb:
				return 0
			case sa != sa:
				return 1
			case sb != sb:
				return -1
			case sa > sb:
				return -1
			case sa < sb:
				return 1
			}
			return 0
		})
		for _, k := range []int{0, 1, 2, n / 5, n / 4, n - 1, n} {
			k = min(max(k, 0), n)
			if got := TopOrder(scores, k); !slices.Equal(got, want[:k]) {
				t.Errorf("n=%d k=%d: got %v, want %v", n, k, got, want[:k])
			}
		}
	}
}

func TestMappingCacheIsBounded(t *testing.T) {
	c := NewMappingCache(2, 1<<20)
	model := []string{"a", "b"}
	first := c.Get("h", model, []string{"a"}, nil, nil)
	if c.Get("h", model, []string{"a"}, nil, nil) != first {
		t.Error("same layout was not served from the cache")
	}
	c.Get("h", model, []string{"b"}, nil, nil)
	c.Get("h", model, []string{"a", "b"}, nil, nil)
	if len(c.entries) > 2 {
		t.Errorf("cache holds %d layouts, limit 2", len(c.entries))
	}
}

func TestMappingCacheIsBoundedInBytes(t *testing.T) {
	const budget = 64 << 10
	c := NewMappingCache(1024, budget)
	model := []string{"a", "b"}
	for i := range 200 { // layouts of about 2 KB each: 400 KB asked for
		c.Get("h", model, []string{fmt.Sprintf("%04d%s", i, strings.Repeat("x", 2000))}, nil, nil)
		if c.bytes > budget {
			t.Fatalf("after %d layouts the cache holds %d bytes, budget %d", i+1, c.bytes, budget)
		}
	}
	huge := []string{strings.Repeat("y", budget)}
	if m := c.Get("h", model, huge, nil, nil); m == nil || len(m.Ignored) != 1 {
		t.Fatalf("a layout too big to cache must still be mapped: %+v", m)
	}
	if _, cached := c.entries[layoutKey("h", huge, nil)]; cached {
		t.Fatal("a layout over an eighth of the budget was cached")
	}
}

func TestLayoutKeysNeverCollide(t *testing.T) {
	layouts := []struct{ names, ctx []string }{
		{[]string{"a", "b"}, nil},
		{[]string{"a\x00b"}, nil},
		{[]string{"a"}, []string{"b"}},
		{nil, []string{"a", "b"}},
		{[]string{"a:b"}, nil},
		{[]string{"1:a"}, nil},
		{[]string{""}, nil},
		{nil, nil},
	}
	seen := map[string]int{}
	for i, l := range layouts {
		key := layoutKey("h", l.names, l.ctx)
		if j, dup := seen[key]; dup {
			t.Errorf("layouts %d and %d share key %q", j, i, key)
		}
		seen[key] = i
	}
	if layoutKey("h1", []string{"a"}, nil) == layoutKey("h2", []string{"a"}, nil) {
		t.Error("two models share a layout key")
	}
}
