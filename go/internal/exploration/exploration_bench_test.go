package exploration

import (
	"fmt"
	"testing"
)

// BenchmarkApply is exploration's cost on one request ranking the top 10 of
// its candidates: off, on but this request not explored (the common case at
// a small share), and explored (the shuffle and the permutation kept for the
// propensities), with the propensities read as the exposure log does.
func BenchmarkApply(b *testing.B) {
	on := Policy{SharePercent: 5, Depth: 10}
	var notExplored, explored string
	for i := 0; notExplored == "" || explored == ""; i++ {
		id := fmt.Sprint("request-", i)
		if on.Apply(id, items(10)).Explored {
			explored = id
		} else {
			notExplored = id
		}
	}
	for _, tc := range []struct {
		name, id string
		p        Policy
	}{{"off", notExplored, Policy{Depth: 10}}, {"on/not-explored", notExplored, on}, {"on/explored", explored, on}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			order := items(10)
			sum := 0.0
			for b.Loop() {
				out := tc.p.Apply(tc.id, order)
				for place := range order {
					sum += out.Propensity(place)
				}
			}
			if sum == 0 {
				b.Fatal("no propensity read")
			}
		})
	}
}
