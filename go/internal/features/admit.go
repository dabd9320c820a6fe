package features

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The rules on the state (see rules.go), checked in Go against the
// in-memory State: the embedded backend's half of each rule, whose Lua half
// is in the Redis backend. Each check reports whether the event breaks the
// rule, given what the batch accepted before it.

// admission is one batch being admitted: the state as it was, and the
// events the batch accepted so far.
type admission struct {
	s         *State
	b         Bounds
	watermark int64             // the latest event time, the batch's accepted events included
	before    int64             // the latest event time before the batch
	ids       map[string]int64  // event ids accepted -> event time
	clickIDs  map[string]bool   // those of them that are clicks'
	shown     map[string]*shown // impressions accepted, by impressionKey
	clicked   map[string]bool   // impressions clicked, by impressionKey
}

// current reports whether a recorded impression or event id of time t is
// within the lateness bound of the latest event before the batch; one older
// is absent to every rule. This is the event clock alone, as in the Redis
// scripts, and independent of when Prune last ran (Prune runs between
// batches and drops only what this already treats as absent). The bound is
// the batch's start, not the running watermark, because a batch applies
// its impressions before its clicks: a batch of an in-order log spanning
// more than the lateness must still find each click's impression.
func (a *admission) current(t int64) bool {
	return !lateBy(a.before, t, a.b.Lateness)
}

// lateBy reports whether t is more than lateness before the watermark.
func lateBy(watermark, t int64, lateness time.Duration) bool {
	return watermark > t && watermark-t > lateness.Microseconds()
}

// impression returns the impression an event names, from the batch or the
// state; nil for none, or one older than the lateness bound.
func (a *admission) impression(requestID, articleID string) *shown {
	key := impressionKey(requestID, articleID)
	imp := a.shown[key]
	if imp == nil {
		imp = a.s.impressions[key]
	}
	if imp == nil || !a.current(imp.time) {
		return nil
	}
	return imp
}

// seen reports whether the event id was recorded, by the state or the
// batch, at a time within the lateness bound.
func (a *admission) seen(id string) bool {
	t, recorded := a.ids[id]
	if !recorded {
		t, recorded = a.s.events[id]
	}
	return recorded && a.current(t)
}

// seenClick reports whether the event id is a click's, given that it was
// seen.
func (a *admission) seenClick(id string) bool { return a.clickIDs[id] || a.s.clickIDs[id] }

var impressionChecks = map[string]func(a *admission, e Impression) bool{
	RuleIDOfOtherKind:  func(a *admission, e Impression) bool { return a.seen(e.EventID) && a.seenClick(e.EventID) },
	RuleDuplicate:      func(a *admission, e Impression) bool { return a.seen(e.EventID) },
	RuleUnknownArticle: func(a *admission, e Impression) bool { return a.s.articles[e.ArticleID] == nil },
	RuleLate:           func(a *admission, e Impression) bool { return lateBy(a.watermark, e.Time, a.b.Lateness) },
	RuleShownTwice:     func(a *admission, e Impression) bool { return a.impression(e.RequestID, e.ArticleID) != nil },
}

var clickChecks = map[string]func(a *admission, e Click) bool{
	RuleIDOfOtherKind: func(a *admission, e Click) bool { return a.seen(e.EventID) && !a.seenClick(e.EventID) },
	RuleDuplicate:     func(a *admission, e Click) bool { return a.seen(e.EventID) },
	RuleNoImpression:  func(a *admission, e Click) bool { return a.impression(e.RequestID, e.ArticleID) == nil },
	RuleOtherReader: func(a *admission, e Click) bool {
		return a.impression(e.RequestID, e.ArticleID).user != e.UserID
	},
	RuleClickedTwice: func(a *admission, e Click) bool {
		return a.impression(e.RequestID, e.ArticleID).clicked || a.clicked[impressionKey(e.RequestID, e.ArticleID)]
	},
	RuleBeforeImpression: func(a *admission, e Click) bool { return e.Time < a.impression(e.RequestID, e.ArticleID).time },
}

// stateCheck is a rule on the state with its Go check.
type stateCheck[T any] struct {
	code   string
	broken func(a *admission, e T) bool
}

// The rules on the state with their checks, in the table's order. Built
// once, and the process does not start when the Go checks do not cover
// exactly the rules on the state: a rule added to a table without its check
// here would pass every event.
var (
	impressionOrder = inOrder("impression", ImpressionRules, impressionChecks)
	clickOrder      = inOrder("click", ClickRules, clickChecks)
)

func inOrder[T any](kind string, rules []Rule[T], checks map[string]func(*admission, T) bool) []stateCheck[T] {
	if err := CoverageOf(rules, checks); err != nil {
		panic(kind + " rules: " + err.Error())
	}
	var out []stateCheck[T]
	for _, code := range StateRules(rules) {
		out = append(out, stateCheck[T]{code, checks[code]})
	}
	return out
}

// CoverageOf reports the rules on the state in rules that impl lacks, and
// the codes impl has that are no such rule: each backend holds its own
// implementations of those rules to the table with it.
func CoverageOf[T, F any](rules []Rule[T], impl map[string]F) error {
	codes := StateRules(rules)
	var problems []string
	for _, c := range codes {
		if _, ok := impl[c]; !ok {
			problems = append(problems, c+" has no check")
		}
	}
	for c := range impl {
		if !slices.Contains(codes, c) {
			problems = append(problems, c+" is checked but is no rule on the state")
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Admit applies the rules to a batch against the state, and returns the
// events to record and what happened to each (Accepted is set). The caller
// is the state's one writer: nothing changes the state between Admit and
// ApplyEvents.
func (s *State) Admit(impressions []Impression, clicks []Click, b Bounds) ([]Impression, []Click, Result) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a := &admission{s: s, b: b, watermark: s.watermark, before: s.watermark, ids: map[string]int64{}, clickIDs: map[string]bool{}, shown: map[string]*shown{}, clicked: map[string]bool{}}
	var res Result
	var okImpressions []Impression
	var okClicks []Click
	for i, e := range impressions {
		if field, reason := CheckImpression(e, b); field != "" {
			res.Refuse(e.EventID, fmt.Sprintf("impressions[%d]", i), field, reason)
			continue
		}
		if code := firstOnState(impressionOrder, a, e); code != "" {
			// The code is the table's: Refuse cannot fail.
			_ = Refuse(&res, ImpressionRules, code, e, e.EventID, fmt.Sprintf("impressions[%d]", i), b, "")
			continue
		}
		a.ids[e.EventID] = e.Time
		a.shown[impressionKey(e.RequestID, e.ArticleID)] = &shown{user: e.UserID, time: e.Time}
		a.watermark = max(a.watermark, e.Time)
		okImpressions = append(okImpressions, e)
	}
	for i, e := range clicks {
		if field, reason := CheckClick(e, b); field != "" {
			res.Refuse(e.EventID, fmt.Sprintf("clicks[%d]", i), field, reason)
			continue
		}
		if code := firstOnState(clickOrder, a, e); code != "" {
			var shownTo string
			if imp := a.impression(e.RequestID, e.ArticleID); imp != nil {
				shownTo = imp.user
			}
			_ = Refuse(&res, ClickRules, code, e, e.EventID, fmt.Sprintf("clicks[%d]", i), b, shownTo)
			continue
		}
		a.ids[e.EventID] = e.Time
		a.clickIDs[e.EventID] = true
		a.clicked[impressionKey(e.RequestID, e.ArticleID)] = true
		a.watermark = max(a.watermark, e.Time)
		okClicks = append(okClicks, e)
	}
	res.Accepted = len(okImpressions) + len(okClicks)
	return okImpressions, okClicks, res
}

// firstOnState returns the code of the first rule on the state that e
// breaks, in the table's order, or "".
func firstOnState[T any](checks []stateCheck[T], a *admission, e T) string {
	for _, c := range checks {
		if c.broken(a, e) {
			return c.code
		}
	}
	return ""
}
