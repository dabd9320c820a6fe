package experiment

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"ranker/internal/exploration"
)

const config = `
experiment:
  name: homepage
  salt: nov-2026
  variants:
    - {name: control, model: demo, weight: 80}
    - {name: treatment, model: candidate, weight: 15}
    - {name: canary, model: canary, weight: 5}
  shadow: {model: candidate, max_in_flight: 3}
`

var served = []string{"demo", "candidate", "canary"}

func TestSharesFollowWeightsOver100kUsers(t *testing.T) {
	e, err := Parse([]byte(config), served)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	const users = 100_000
	for i := range users {
		counts[e.Assign(fmt.Sprintf("user-%d", i)).Name]++
	}
	for _, v := range e.Variants {
		share := 100 * float64(counts[v.Name]) / users
		if math.Abs(share-v.Weight) > 1 {
			t.Errorf("variant %s: got %.2f%% of users, want %.0f%% within 1 point", v.Name, share, v.Weight)
		}
	}
}

func TestAssignmentIsStableAndRaisingAWeightOnlyAddsUsers(t *testing.T) {
	before, _ := Parse([]byte(config), served)
	raised, err := Parse([]byte(strings.NewReplacer("weight: 15", "weight: 18", "weight: 5", "weight: 2").Replace(config)), served)
	if err != nil {
		t.Fatal(err)
	}
	moved := 0
	for i := range 50_000 {
		user := fmt.Sprintf("user-%d", i)
		a := before.Assign(user).Name
		if again := before.Assign(user).Name; again != a {
			t.Fatalf("user %s: %s then %s", user, a, again)
		}
		b := raised.Assign(user).Name
		if a == "treatment" && b != "treatment" {
			t.Fatalf("user %s left treatment when its weight went up", user)
		}
		if a != "treatment" && b == "treatment" {
			moved++
		}
	}
	if moved == 0 {
		t.Error("raising the weight added no users")
	}
}

func TestSaltReshuffles(t *testing.T) {
	a, _ := Parse([]byte(config), served)
	b, _ := Parse([]byte(strings.Replace(config, "nov-2026", "dec-2026", 1)), served)
	same := 0
	for i := range 1000 {
		if a.Bucket(fmt.Sprint(i)) == b.Bucket(fmt.Sprint(i)) {
			same++
		}
	}
	if same > 20 {
		t.Errorf("%d of 1000 users kept their bucket under a new salt", same)
	}
}

func TestInvalidConfigsNameTheField(t *testing.T) {
	tests := []struct{ edit, want string }{
		{"weight: 5}", "weights add up to 97.00%"},
		{"model: canary", "variants[2].model: \"nope\" is not served"},
		{"name: canary", "variants[2].name: \"control\" is empty or repeated"},
		{"salt: nov-2026", "experiment.salt: required"},
		{"shadow: {model: candidate", "experiment.shadow.model: \"nope\""},
		{"weight: 80}", "variants[0].weight: 80.001"},
		{"max_in_flight", "field typo_in_flight not found"},
	}
	replacements := map[string]string{
		"weight: 5}": "weight: 2}", "model: canary": "model: nope", "name: canary": "name: control",
		"salt: nov-2026": "salt: \"\"", "shadow: {model: candidate": "shadow: {model: nope",
		"weight: 80}": "weight: 80.001}", "max_in_flight": "typo_in_flight",
	}
	for _, tt := range tests {
		_, err := Parse([]byte(strings.Replace(config, tt.edit, replacements[tt.edit], 1)), served)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("edit %q: got %v, want an error containing %q", tt.edit, err, tt.want)
		}
	}
}

const interleaved = `
experiment:
  name: homepage
  salt: nov-2026
  variants:
    - {name: control, model: demo, weight: 90}
    - {name: interleaved, interleave: {a: demo, b: candidate, b_version: v7}, weight: 10}
`

func TestInterleavedVariantParsesAndPinsItsVersions(t *testing.T) {
	e, err := Parse([]byte(interleaved), served)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := e.Variant("interleaved")
	if !ok || v.Interleave == nil {
		t.Fatalf("got variant %+v, want one with interleave", v)
	}
	if got, want := *v.Interleave, (Interleave{A: "demo", B: "candidate", BVersion: "v7"}); got != want {
		t.Errorf("got interleave %+v, want %+v", got, want)
	}
	if got := e.Pins(); len(got) != 1 || len(got["candidate"]) != 1 || got["candidate"][0] != "v7" {
		t.Errorf("got pins %v, want candidate: [v7]", got)
	}
}

func TestInvalidInterleaveConfigsNameTheField(t *testing.T) {
	tests := []struct{ from, to, want string }{
		{"a: demo,", "a: nope,", `variants[1].interleave.a: "nope" is not served`},
		{"b: candidate,", "b: nope,", `variants[1].interleave.b: "nope" is not served`},
		{"{name: interleaved,", "{name: interleaved, model: demo,", "variants[1]: model/version and interleave exclude each other"},
		{"{name: interleaved,", "{name: interleaved, version: v1,", "variants[1]: model/version and interleave exclude each other"},
		{"b_version", "c_version", "field c_version not found"},
	}
	for _, tt := range tests {
		edited := strings.Replace(interleaved, tt.from, tt.to, 1)
		if edited == interleaved {
			t.Fatalf("edit %q changed nothing", tt.from)
		}
		_, err := Parse([]byte(edited), served)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("edit %q: got %v, want an error containing %q", tt.to, err, tt.want)
		}
	}
}

func TestVariantExplorationParsesAndTakesTheServerDepthWhenUnset(t *testing.T) {
	raw := strings.NewReplacer(
		"{name: control, model: demo, weight: 80}", "{name: control, model: demo, weight: 80, exploration: {share: 0}}",
		"{name: treatment, model: candidate, weight: 15}", "{name: treatment, model: candidate, weight: 15, exploration: {share: 5, depth: 4}}",
		"{name: canary, model: canary, weight: 5}", "{name: canary, model: canary, weight: 5, exploration: {share: 12.5}}",
	).Replace(config)
	e, err := Parse([]byte(raw), served)
	if err != nil {
		t.Fatal(err)
	}
	server := exploration.Policy{SharePercent: 1, Depth: 10}
	want := map[string]exploration.Policy{"control": {SharePercent: 0, Depth: 10}, "treatment": {SharePercent: 5, Depth: 4}, "canary": {SharePercent: 12.5, Depth: 10}}
	for name, w := range want {
		v, _ := e.Variant(name)
		if v.Exploration == nil {
			t.Fatalf("%s: no exploration parsed", name)
		}
		if got := v.Exploration.Policy(server); got != w {
			t.Errorf("%s: got %+v, want %+v", name, got, w)
		}
	}
	if plain, _ := Parse([]byte(config), served); plain.Variants[0].Exploration != nil {
		t.Errorf("a variant without exploration parsed %+v, want nil (the server's policy)", plain.Variants[0].Exploration)
	}
}

func TestInvalidExplorationNamesTheField(t *testing.T) {
	tests := []struct{ config, from, to, want string }{
		{config, "weight: 15}", "weight: 15, exploration: {share: 101}}", "experiment.variants[1].exploration.share: 101, want a percentage from 0 to 100"},
		{config, "weight: 15}", "weight: 15, exploration: {share: 5.125}}", "experiment.variants[1].exploration.share: 5.125,"},
		{config, "weight: 15}", "weight: 15, exploration: {share: -1}}", "experiment.variants[1].exploration.share: -1,"},
		{config, "weight: 15}", "weight: 15, exploration: {depth: 4}}", "experiment.variants[1].exploration.share: required"},
		{config, "weight: 15}", "weight: 15, exploration: {share: 5, depth: 1}}", "experiment.variants[1].exploration.depth: 1, want at least 2"},
		{config, "weight: 15}", "weight: 15, exploration: {share: 5, width: 3}}", "field width not found"},
		{interleaved, "weight: 10}", "weight: 10, exploration: {share: 5}}", "experiment.variants[1].exploration: an interleaved variant cannot explore"},
	}
	for _, tt := range tests {
		edited := strings.Replace(tt.config, tt.from, tt.to, 1)
		if edited == tt.config {
			t.Fatalf("edit %q changed nothing", tt.from)
		}
		_, err := Parse([]byte(edited), served)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("edit %q: got %v, want an error containing %q", tt.to, err, tt.want)
		}
	}
}
