// Package experiment assigns requests to variants of a controlled experiment
// by a deterministic hash of the user id and an experiment salt, and loads
// the experiment from a YAML file that can be reloaded.
package experiment

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"os"

	"go.yaml.in/yaml/v3"

	"ranker/internal/exploration"
)

// Buckets is how finely traffic is split: a variant's weight is a percentage
// with up to two decimals, i.e. a whole number of these buckets.
const Buckets = 10000

// Variant is one arm: a share of users ranked by a model, or by two models
// interleaved.
type Variant struct {
	Name  string `yaml:"name"`
	Model string `yaml:"model"`
	// Version pins a model version (a canary of a new one, or a control held
	// on an old one); empty follows the newest version as it is swapped in.
	Version string `yaml:"version"`
	// Interleave, instead of Model, ranks by merging two models' rankings
	// (team-draft interleaving), recording which model placed each article.
	Interleave *Interleave `yaml:"interleave"`
	Weight     float64     `yaml:"weight"` // percent of users
	// Exploration, when set, replaces the server's exploration policy for
	// the variant's requests (single-model variants only).
	Exploration *Exploration `yaml:"exploration"`
	start       int          // first bucket
	end         int          // one past the last bucket
}

// Interleave names the two models an interleaved variant merges; a version,
// as in Variant, pins one. A and B may be the same model (an A/A check of
// the interleaving analysis) or two versions of one model.
type Interleave struct {
	A        string `yaml:"a"`
	B        string `yaml:"b"`
	AVersion string `yaml:"a_version"`
	BVersion string `yaml:"b_version"`
}

// Exploration is a variant's own shuffle-top exploration (see package
// exploration): `exploration: {share: 5, depth: 10}`. Share is required (0
// turns exploration off for the variant); a depth left out is the server's
// --exploration-depth. An interleaved variant cannot explore: team draft
// randomises on its own, and its records carry no propensities.
type Exploration struct {
	Share *float64 `yaml:"share"` // percent of the variant's requests
	Depth int      `yaml:"depth"` // top places permuted; 0: the server's
}

// Policy is the variant's policy, taking the depth from server when the
// variant sets none.
func (x *Exploration) Policy(server exploration.Policy) exploration.Policy {
	p := exploration.Policy{SharePercent: *x.Share, Depth: x.Depth}
	if p.Depth == 0 {
		p.Depth = server.Depth
	}
	return p
}

// validate names the field at fault below "exploration".
func (x *Exploration) validate(interleaved bool) error {
	switch {
	case interleaved:
		return errors.New("exploration: an interleaved variant cannot explore (team draft randomises on its own, and its records carry no propensities)")
	case x.Share == nil:
		return errors.New("exploration.share: required (0 turns exploration off for the variant)")
	}
	if err := exploration.ValidateShare(*x.Share); err != nil {
		return fmt.Errorf("exploration.share: %w", err)
	}
	if x.Depth != 0 {
		if err := exploration.ValidateDepth(x.Depth); err != nil {
			return fmt.Errorf("exploration.depth: %w", err)
		}
	}
	return nil
}

// Shadow scores the same candidates with another model on the side. It runs
// beside single-model variants only: an interleaved request already scores
// two models, and its ranking is neither's.
type Shadow struct {
	Model string `yaml:"model"`
	// MaxInFlight bounds concurrent shadow scorings; more are skipped.
	MaxInFlight int `yaml:"max_in_flight"`
}

// Experiment is the parsed, validated configuration.
type Experiment struct {
	Name     string    `yaml:"name"`
	Salt     string    `yaml:"salt"`
	Variants []Variant `yaml:"variants"`
	Shadow   *Shadow   `yaml:"shadow"`
}

type file struct {
	Experiment *Experiment `yaml:"experiment"`
}

// Parse reads and validates an experiment; models lists the served model
// names a variant may use.
func Parse(raw []byte, models []string) (*Experiment, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("experiment config: %w", err)
	}
	e := f.Experiment
	if e == nil {
		return nil, errors.New("experiment config: no `experiment:` section")
	}
	served := map[string]bool{}
	for _, m := range models {
		served[m] = true
	}
	switch {
	case e.Name == "":
		return nil, errors.New("experiment.name: required")
	case e.Salt == "":
		return nil, errors.New("experiment.salt: required (changing it reshuffles every user)")
	case len(e.Variants) == 0:
		return nil, errors.New("experiment.variants: at least one is required")
	}
	seen := map[string]bool{}
	at := 0
	for i := range e.Variants {
		v := &e.Variants[i]
		buckets := v.Weight * Buckets / 100
		switch {
		case v.Name == "" || seen[v.Name]:
			return nil, fmt.Errorf("experiment.variants[%d].name: %q is empty or repeated", i, v.Name)
		case v.Interleave != nil:
			if err := v.Interleave.validate(served, models); err != nil {
				return nil, fmt.Errorf("experiment.variants[%d].%w", i, err)
			}
			if v.Model != "" || v.Version != "" {
				// One arm ranks one way; a model beside interleave would be ignored.
				return nil, fmt.Errorf("experiment.variants[%d]: model/version and interleave exclude each other (interleave names its models as a and b)", i)
			}
		case !served[v.Model]:
			return nil, fmt.Errorf("experiment.variants[%d].model: %q is not served (serving %v)", i, v.Model, models)
		case v.Weight < 0 || math.Abs(buckets-math.Round(buckets)) > 1e-9:
			return nil, fmt.Errorf("experiment.variants[%d].weight: %v, want a percentage with at most two decimals", i, v.Weight)
		}
		if x := v.Exploration; x != nil {
			if err := x.validate(v.Interleave != nil); err != nil {
				return nil, fmt.Errorf("experiment.variants[%d].%w", i, err)
			}
		}
		seen[v.Name] = true
		v.start, v.end = at, at+int(math.Round(buckets))
		at = v.end
	}
	if at != Buckets {
		return nil, fmt.Errorf("experiment.variants: weights add up to %.2f%%, want 100%%", float64(at)*100/Buckets)
	}
	if s := e.Shadow; s != nil {
		if !served[s.Model] {
			return nil, fmt.Errorf("experiment.shadow.model: %q is not served (serving %v)", s.Model, models)
		}
		if s.MaxInFlight <= 0 {
			s.MaxInFlight = 2
		}
	}
	return e, nil
}

func (il *Interleave) validate(served map[string]bool, models []string) error {
	switch {
	case !served[il.A]:
		return fmt.Errorf("interleave.a: %q is not served (serving %v)", il.A, models)
	case !served[il.B]:
		return fmt.Errorf("interleave.b: %q is not served (serving %v)", il.B, models)
	}
	return nil
}

// Load reads and validates the experiment file at path.
func Load(path string, models []string) (*Experiment, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("experiment config: %w", err)
	}
	e, err := Parse(raw, models)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return e, nil
}

// Bucket places a user in [0, Buckets). Variants own contiguous bucket
// ranges in the order they are listed, so raising a variant's weight at the
// expense of the variants after it only adds users to it.
func (e *Experiment) Bucket(userID string) int {
	h := fnv.New64a()
	h.Write([]byte(e.Salt))
	h.Write([]byte{0})
	h.Write([]byte(userID))
	return int(h.Sum64() % Buckets)
}

// Assign returns the user's variant.
func (e *Experiment) Assign(userID string) *Variant {
	b := e.Bucket(userID)
	for i := range e.Variants {
		if v := &e.Variants[i]; b >= v.start && b < v.end {
			return v
		}
	}
	return &e.Variants[len(e.Variants)-1] // unreachable: ranges cover every bucket
}

// Pins lists the model versions the variants name, by model.
func (e *Experiment) Pins() map[string][]string {
	pins := map[string][]string{}
	pin := func(model, version string) {
		if version != "" {
			pins[model] = append(pins[model], version)
		}
	}
	for _, v := range e.Variants {
		pin(v.Model, v.Version)
		if il := v.Interleave; il != nil {
			pin(il.A, il.AVersion)
			pin(il.B, il.BVersion)
		}
	}
	return pins
}

// Variant looks a variant up by name (forced assignment).
func (e *Experiment) Variant(name string) (*Variant, bool) {
	for i := range e.Variants {
		if e.Variants[i].Name == name {
			return &e.Variants[i], true
		}
	}
	return nil, false
}
