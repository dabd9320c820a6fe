package experiment

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"ranker/internal/exposure"
)

// fixedCoins returns the flips in order, then fails the test if asked for more.
func fixedCoins(t *testing.T, flips ...bool) func() bool {
	return func() bool {
		if len(flips) == 0 {
			t.Fatal("coin flipped more often than the case expects")
		}
		f := flips[0]
		flips = flips[1:]
		return f
	}
}

func TestTeamDraftByHand(t *testing.T) {
	tests := []struct {
		name      string
		a, b      []int
		k         int
		coins     []bool
		wantOrder []int
		wantTeams string
	}{
		// A wins the first toss and takes 0; B, behind, takes its best left
		// (1); B wins the second toss and takes 3, as 1 and 0 are placed; A,
		// behind, takes 2.
		{"disagreeing", []int{0, 1, 2, 3}, []int{1, 0, 3, 2}, 4, []bool{true, false}, []int{0, 1, 3, 2}, "abba"},
		{"B first", []int{0, 1, 2, 3}, []int{1, 0, 3, 2}, 4, []bool{false, true}, []int{1, 0, 2, 3}, "baab"},
		{"top k stops the draft", []int{0, 1, 2, 3}, []int{3, 2, 1, 0}, 3, []bool{true, true}, []int{0, 3, 1}, "aba"},
		{"k past the end", []int{1, 0}, []int{1, 0}, 5, []bool{false}, []int{1, 0}, "ba"},
		{"one candidate", []int{0}, []int{0}, 1, []bool{true}, []int{0}, "a"},
		{"no candidates", nil, nil, 3, nil, []int{}, ""},
	}
	for _, tt := range tests {
		order, teams := TeamDraft(tt.a, tt.b, tt.k, fixedCoins(t, tt.coins...))
		if !slices.Equal(order, tt.wantOrder) || strings.Join(teams, "") != tt.wantTeams {
			t.Errorf("%s: got %v teams %q, want %v teams %q", tt.name, order, strings.Join(teams, ""), tt.wantOrder, tt.wantTeams)
		}
	}
}

// checkTeamDraft fails unless order and teams are a team draft of a and b:
// each candidate at most once, each team's pick its ranking's best candidate
// not yet placed, and the teams' sizes within one of each other after every
// place.
func checkTeamDraft(t *testing.T, what string, a, b []int, order []int, teams []string) {
	t.Helper()
	if len(order) != len(teams) {
		t.Fatalf("%s: %d places but %d teams", what, len(order), len(teams))
	}
	placed := map[int]bool{}
	size := map[string]int{}
	for r, i := range order {
		ranking := a
		if teams[r] == exposure.TeamB {
			ranking = b
		} else if teams[r] != exposure.TeamA {
			t.Fatalf("%s: place %d has team %q", what, r, teams[r])
		}
		best := -1
		for _, j := range ranking {
			if !placed[j] {
				best = j
				break
			}
		}
		if i != best {
			t.Fatalf("%s: place %d: team %s picked %d, want its best unplaced %d", what, r, teams[r], i, best)
		}
		placed[i] = true
		size[teams[r]]++
		if d := size[exposure.TeamA] - size[exposure.TeamB]; d < -1 || d > 1 {
			t.Fatalf("%s: after place %d the teams have %d and %d picks", what, r, size[exposure.TeamA], size[exposure.TeamB])
		}
	}
}

func TestTeamDraftPropertiesOnRandomRankings(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	firstA := 0
	const trials = 2000
	for trial := range trials {
		n := 1 + rng.IntN(30)
		a, b := rng.Perm(n), rng.Perm(n)
		k := 1 + rng.IntN(n+2)
		id := fmt.Sprintf("request-%d", trial)
		order, teams := TeamDraft(a, b, k, CoinFlips(id))
		what := fmt.Sprintf("trial %d (a %v, b %v, k %d)", trial, a, b, k)
		checkTeamDraft(t, what, a, b, order, teams)
		if len(order) != min(k, n) {
			t.Fatalf("%s: got %d places, want %d", what, len(order), min(k, n))
		}
		again, againTeams := TeamDraft(a, b, k, CoinFlips(id))
		if !slices.Equal(order, again) || !slices.Equal(teams, againTeams) {
			t.Fatalf("%s: the same request id gave %v %v, then %v %v", what, order, teams, again, againTeams)
		}
		full, fullTeams := TeamDraft(a, b, n, CoinFlips(id))
		if !slices.Equal(full[:len(order)], order) || !slices.Equal(fullTeams[:len(teams)], teams) {
			t.Fatalf("%s: top %d %v is not the start of the whole interleaving %v", what, k, order, full)
		}
		if agreed, _ := TeamDraft(a, slices.Clone(a), n, CoinFlips(id)); !slices.Equal(agreed, a) {
			t.Fatalf("%s: rankings that agree interleave to %v, want %v", what, agreed, a)
		}
		if teams[0] == exposure.TeamA {
			firstA++
		}
	}
	// The first pick is the first coin: fair within 4 binomial standard errors.
	if share, se := float64(firstA)/trials, 0.5/40.0; share < 0.5-4*se || share > 0.5+4*se {
		t.Errorf("team A picked first in %.3f of requests, want 0.5 ± %.3f", share, 4*se)
	}
}

func TestSpearmanOfRankings(t *testing.T) {
	tests := []struct {
		name string
		a, b []int
		want float64
	}{
		{"the same ranking", []int{2, 0, 1, 3}, []int{2, 0, 1, 3}, 1},
		{"reversed", []int{0, 1, 2, 3}, []int{3, 2, 1, 0}, -1},
		// ranks a: 0 1 2, b: 1 0 2 -> d^2 sums to 2; 1 - 6*2/(3*8) = 0.5
		{"two swapped of three", []int{0, 1, 2}, []int{1, 0, 2}, 0.5},
		{"one candidate", []int{0}, []int{0}, 1},
		{"none", nil, nil, 1},
	}
	for _, tt := range tests {
		if got := Spearman(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestUnionAndIntersectionKeepTheFirstListsOrder(t *testing.T) {
	a, b := []string{"x", "y", "z"}, []string{"w", "z", "x"}
	if got, want := Union(a, b), []string{"x", "y", "z", "w"}; !slices.Equal(got, want) {
		t.Errorf("union: got %v, want %v", got, want)
	}
	if got, want := Intersection(a, b), []string{"x", "z"}; !slices.Equal(got, want) {
		t.Errorf("intersection: got %v, want %v", got, want)
	}
}
