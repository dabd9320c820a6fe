package features

import (
	"slices"
	"testing"
	"time"
)

// The embedded backend's answers on impressions and event ids past the
// lateness come from their event times, not from whether Prune has dropped
// them yet: a state pruned after every batch and one never pruned answer
// every batch alike.
func TestAdmitDoesNotDependOnWhenPruneRuns(t *testing.T) {
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	hour := int64(time.Hour / time.Microsecond)
	t0 := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC).UnixMicro()
	b := Bounds{Limits: DefaultLimits, Devices: spec.Devices, Future: t0 + 100*hour}
	edge := t0 + 28*hour - DefaultLimits.Lateness.Microseconds()
	imp := func(id, request string, at int64) Impression {
		return Impression{EventID: id, RequestID: request, UserID: "u", ArticleID: "1", Time: at}
	}
	click := func(id, request string, at int64) Click {
		return Click{EventID: id, RequestID: request, UserID: "u", ArticleID: "1", Time: at}
	}
	type batch struct {
		impressions []Impression
		clicks      []Click
	}
	batches := []batch{
		{impressions: []Impression{imp("a", "r1", t0), imp("b", "r2", edge-1), imp("c", "r3", edge)}},
		{impressions: []Impression{imp("d", "r4", t0+28*hour)}},
		{impressions: []Impression{imp("a", "r1", t0), imp("b", "r2", edge-1), imp("c", "r3", edge)},
			clicks: []Click{click("k1", "r1", t0+28*hour), click("k2", "r2", t0+28*hour), click("k3", "r3", t0+28*hour)}},
	}
	pruned, unpruned := NewState(spec, DefaultEmbeddingDimensions), NewState(spec, DefaultEmbeddingDimensions)
	var results [2][]Result
	for i, s := range []*State{pruned, unpruned} {
		s.ApplyArticles([]Article{{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0}})
		for _, bt := range batches {
			impressions, clicks, res := s.Admit(bt.impressions, bt.clicks, b)
			s.ApplyEvents(impressions, clicks)
			results[i] = append(results[i], res)
			if s == pruned {
				s.Prune(DefaultLimits.Lateness)
			}
		}
	}
	if ids, _ := pruned.Retained(); ids >= len(unpruned.events) {
		t.Fatalf("Prune dropped no event id: %d of %d kept", ids, len(unpruned.events))
	}
	for i := range batches {
		if p, u := results[0][i], results[1][i]; p.Accepted != u.Accepted || p.Duplicates != u.Duplicates || !slices.Equal(p.Rejected, u.Rejected) {
			t.Errorf("batch %d: pruned %+v, unpruned %+v", i, p, u)
		}
	}
	// The last batch: a and b (older than the bound) are judged anew, as
	// late, and their clicks find no impression; c, at the bound, is a
	// duplicate and its click counts.
	last := results[1][2]
	got := []string{}
	for _, r := range last.Rejected {
		got = append(got, r.ID+" "+r.Field)
	}
	want := []string{"a impressions[0].time", "b impressions[1].time", "k1 clicks[0].request_id", "k2 clicks[1].request_id"}
	if last.Accepted != 1 || last.Duplicates != 1 || !slices.Equal(got, want) {
		t.Errorf("last batch: %d accepted, %d duplicates, refused %q; want 1, 1, %q", last.Accepted, last.Duplicates, got, want)
	}
}
