package features

import (
	"testing"
	"time"
)

// The rules that need no state come first in each table: the backends check
// them in Go before they look at the state at all. Codes are unique, and a
// refusal names a field and can be worded.
func TestRuleTablesAreWellFormed(t *testing.T) {
	check := func(name string, n int, rule func(i int) (code, field string, onState, worded bool)) {
		seen := map[string]bool{}
		stateFrom := -1
		for i := range n {
			code, field, onState, worded := rule(i)
			if seen[code] {
				t.Errorf("%s: code %q twice", name, code)
			}
			seen[code] = true
			if onState && stateFrom < 0 {
				stateFrom = i
			}
			if !onState && stateFrom >= 0 {
				t.Errorf("%s: %q needs no state but follows a rule on the state", name, code)
			}
			if code == RuleDuplicate {
				if field != "" || worded {
					t.Errorf("%s: the duplicate rule is counted, not refused", name)
				}
				continue
			}
			if field == "" || (onState && !worded) {
				t.Errorf("%s: %q names no field or has no reason", name, code)
			}
		}
	}
	check("articles", len(ArticleRules), func(i int) (string, string, bool, bool) {
		r := ArticleRules[i]
		return r.Code, r.Field, r.OnState(), r.Reason != nil
	})
	check("impressions", len(ImpressionRules), func(i int) (string, string, bool, bool) {
		r := ImpressionRules[i]
		return r.Code, r.Field, r.OnState(), r.Reason != nil
	})
	check("clicks", len(ClickRules), func(i int) (string, string, bool, bool) {
		r := ClickRules[i]
		return r.Code, r.Field, r.OnState(), r.Reason != nil
	})
	if got := StateRules(ArticleRules); len(got) != 0 {
		t.Errorf("article rules on the state: %v; the backends check none", got)
	}
}

func TestCoverageNamesMissingAndExtraChecks(t *testing.T) {
	impl := map[string]bool{RuleIDOfOtherKind: true, RuleDuplicate: true, RuleUnknownArticle: true, RuleLate: true, "made_up": true}
	err := CoverageOf(ImpressionRules, impl)
	if err == nil || err.Error() != "made_up is checked but is no rule on the state; shown_twice has no check" {
		t.Fatalf("got %v", err)
	}
	if err := CoverageOf(ClickRules, clickChecks); err != nil {
		t.Fatal(err)
	}
}

func TestRefuseTakesOnlyTheTablesCodes(t *testing.T) {
	var r Result
	b := NewBounds(&Spec{}, DefaultLimits, time.Time{})
	if err := Refuse(&r, ClickRules, "time_required", Click{}, "k", "clicks[0]", b, ""); err == nil {
		t.Error("a rule needing no state answered from the state: want an error")
	}
	if err := Refuse(&r, ClickRules, "nonsense", Click{}, "k", "clicks[0]", b, ""); err == nil {
		t.Error("an unknown code: want an error")
	}
	if err := Refuse(&r, ClickRules, RuleOtherReader, Click{}, "k", "clicks[3]", b, "u"); err != nil {
		t.Fatal(err)
	}
	if err := Refuse(&r, ClickRules, RuleDuplicate, Click{}, "k2", "clicks[4]", b, ""); err != nil {
		t.Fatal(err)
	}
	want := Rejection{ID: "k", Field: "clicks[3].user_id", Reason: `the impression was shown to "u"`}
	if len(r.Rejected) != 1 || r.Rejected[0] != want || r.Duplicates != 1 {
		t.Fatalf("got %+v, want one rejection %+v and one duplicate", r, want)
	}
}
