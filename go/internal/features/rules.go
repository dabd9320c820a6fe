package features

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// The acceptance rules: which catalog entries and events a feature state
// takes, and why it refuses the others. Every backend applies these tables
// in their order, and the first rule an item breaks decides.
//
// A rule that needs no state (Check set) runs in Go before anything is
// written, on every backend alike (CheckArticle, CheckImpression,
// CheckClick). A rule on the state (Check nil) each backend checks against
// its own state: the embedded one in Go (State.Admit), Redis in its Lua
// scripts, which are assembled in the order of these tables and answer a
// rule's Code; the refusal's field and reason always come from here.
// backendtest runs one set of cases against every backend.
//
// Every event is judged against the state as it stands after the earlier
// accepted events of its own batch (impressions first, then clicks, each in
// order), exactly as if each had been sent alone: that is how Redis applies
// a batch, one atomic script per event, and the embedded state does the
// same, so a batch gives the same answer on both.

// Bounds on what one batch and one entry may hold.
const (
	MaxBatch      = 10_000 // events or articles per call
	MaxTitleBytes = 2_000
	maxIDBytes    = 256
)

// Limits are the bounds events and catalog entries are held to.
type Limits struct {
	// Lateness: an event older than the newest event recorded by more than
	// this is refused (its page view's features were served long ago).
	// By the same event clock, an impression or event id recorded that long
	// before the newest event is absent to every rule on the state: a click
	// on it finds no impression, and the id sent again is judged as new
	// (so refused as late) rather than counted as a duplicate. Every
	// backend decides this from the stored event time, not from when it
	// forgets the entry.
	Lateness time.Duration
	// ClockSkew: an event later than the server clock by more than this is
	// refused.
	ClockSkew time.Duration
	// EmbeddingDimensions: an article's embedding has exactly this many
	// components, or none (1 to MaxEmbeddingDimensions).
	EmbeddingDimensions int
}

// DefaultLimits are the documented defaults.
var DefaultLimits = Limits{Lateness: 24 * time.Hour, ClockSkew: 5 * time.Minute, EmbeddingDimensions: DefaultEmbeddingDimensions}

// Check reports limits a state cannot open with.
func (l Limits) Check() error {
	if l.EmbeddingDimensions < 1 || l.EmbeddingDimensions > MaxEmbeddingDimensions {
		return fmt.Errorf("embedding dimensions: %d, want 1 to %d", l.EmbeddingDimensions, MaxEmbeddingDimensions)
	}
	return nil
}

// Bounds is what the rules hold one batch to: the limits, the devices the
// specification names, and the latest event time accepted (the server clock
// plus the skew bound, read once per batch).
type Bounds struct {
	Limits
	Devices []string
	Future  int64 // microseconds since the epoch
}

// NewBounds returns the bounds of a batch received at now.
func NewBounds(spec *Spec, limits Limits, now time.Time) Bounds {
	return Bounds{Limits: limits, Devices: spec.Devices, Future: now.Add(limits.ClockSkew).UnixMicro()}
}

// Rule is one acceptance rule for items of type T.
type Rule[T any] struct {
	// Code names the rule, unique within its table: tests name it, and the
	// Redis scripts answer it.
	Code string
	// Field is the item's field a refusal names; empty for RuleDuplicate,
	// which is counted, not refused.
	Field string
	// Check, for a rule that needs no state, returns why item breaks the
	// rule, or "" when it holds. Nil for a rule on the state.
	Check func(item T, b Bounds) string
	// Reason words a refusal by a rule on the state; shownTo is the reader
	// the clicked impression was shown to (for RuleOtherReader).
	Reason func(item T, b Bounds, shownTo string) string
}

// OnState reports whether the rule needs the state.
func (r Rule[T]) OnState() bool { return r.Check == nil }

// Codes of the rules on the state.
const (
	RuleIDOfOtherKind    = "id_of_other_kind"  // the event id was recorded, within the lateness, for an event of the other kind (a click's for an impression, or the reverse)
	RuleDuplicate        = "duplicate"         // the event id was recorded before, within the lateness: counted as a duplicate
	RuleUnknownArticle   = "unknown_article"   // the impression's article is not in the catalog
	RuleLate             = "late"              // more than the lateness before the newest event
	RuleShownTwice       = "shown_twice"       // the request showed the article already
	RuleNoImpression     = "no_impression"     // the click's impression is not in the state, or is older than the lateness
	RuleOtherReader      = "other_reader"      // the impression was shown to another reader
	RuleClickedTwice     = "clicked_twice"     // the impression is clicked already
	RuleBeforeImpression = "before_impression" // the click is timed before its impression
)

// idRules refuse an empty id, an overlong one, and one with a NUL byte (the
// state separates key parts with it). The reason starts with the field's
// name.
func idRules[T any](field string, id func(T) string) []Rule[T] {
	return []Rule[T]{
		{Code: field + "_required", Field: field, Check: func(x T, _ Bounds) string {
			if id(x) == "" {
				return field + ": required"
			}
			return ""
		}},
		{Code: field + "_too_long", Field: field, Check: func(x T, _ Bounds) string {
			if len(id(x)) > maxIDBytes {
				return fmt.Sprintf("%s: longer than %d bytes", field, maxIDBytes)
			}
			return ""
		}},
		{Code: field + "_nul", Field: field, Check: func(x T, _ Bounds) string {
			if strings.ContainsRune(id(x), 0) {
				return field + ": contains a NUL byte (the state separates key parts with it)"
			}
			return ""
		}},
	}
}

func eventTimeRules[T any](at func(T) int64) []Rule[T] {
	return []Rule[T]{
		{Code: "time_required", Field: "time", Check: func(x T, _ Bounds) string {
			if at(x) == 0 {
				return "required"
			}
			return ""
		}},
		{Code: "time_future", Field: "time", Check: func(x T, b Bounds) string {
			if at(x) > b.Future {
				return "later than the server clock allows (--event-clock-skew)"
			}
			return ""
		}},
	}
}

// ArticleRules are the rules of a catalog entry; none needs the state.
var ArticleRules = slices.Concat(
	idRules("id", func(a Article) string { return a.ID }),
	idRules("category", func(a Article) string { return a.Category }),
	idRules("subcategory", func(a Article) string { return a.Subcategory }),
	[]Rule[Article]{
		{Code: "title_too_long", Field: "title", Check: func(a Article, _ Bounds) string {
			if len(a.Title) > MaxTitleBytes {
				return fmt.Sprintf("%d bytes, more than %d", len(a.Title), MaxTitleBytes)
			}
			return ""
		}},
		{Code: "title_empty", Field: "title", Check: func(a Article, _ Bounds) string {
			if len(a.Title) == 0 || !utf8.ValidString(a.Title) {
				return "empty or not UTF-8"
			}
			return ""
		}},
		{Code: "publish_time_required", Field: "publish_time", Check: func(a Article, _ Bounds) string {
			if a.PublishTime == 0 {
				return "required"
			}
			return ""
		}},
		// A publish time is a moment of the catalog's life: not before
		// 1970 (the epoch of every clock the catalog's systems keep), not
		// later than the server clock allows an event to be, since no
		// reader can be shown an article before it is published (upsert an
		// article when it is published, not when it is scheduled).
		{Code: "publish_time_range", Field: "publish_time", Check: func(a Article, b Bounds) string {
			if a.PublishTime < 0 || a.PublishTime > b.Future {
				return "before 1970 or later than the server clock allows (--event-clock-skew)"
			}
			return ""
		}},
		{Code: "embedding_invalid", Field: "embedding", Check: func(a Article, b Bounds) string {
			return checkEmbedding(a.Embedding, b.EmbeddingDimensions)
		}},
	},
)

// ImpressionRules are the rules of an impression.
var ImpressionRules = slices.Concat(
	idRules("event_id", func(e Impression) string { return e.EventID }),
	idRules("request_id", func(e Impression) string { return e.RequestID }),
	idRules("user_id", func(e Impression) string { return e.UserID }),
	idRules("article_id", func(e Impression) string { return e.ArticleID }),
	[]Rule[Impression]{
		{Code: "device_unknown", Field: "device", Check: func(e Impression, b Bounds) string {
			if e.Device != "" && !slices.Contains(b.Devices, e.Device) {
				return fmt.Sprintf("%q is not one of %v", e.Device, b.Devices)
			}
			return ""
		}},
	},
	eventTimeRules(func(e Impression) int64 { return e.Time }),
	[]Rule[Impression]{
		// An id sent again is a retry, counted once, only when it names an
		// event of the same kind: a reused id must not pass as a retry, or
		// the event it names would be lost without a word.
		{Code: RuleIDOfOtherKind, Field: "event_id", Reason: func(e Impression, _ Bounds, _ string) string {
			return fmt.Sprintf("event id %q is a click's already; every event needs its own id", e.EventID)
		}},
		{Code: RuleDuplicate},
		{Code: RuleUnknownArticle, Field: "article_id", Reason: func(e Impression, _ Bounds, _ string) string {
			return fmt.Sprintf("article %q is not in the catalog (UpsertArticles first)", e.ArticleID)
		}},
		{Code: RuleLate, Field: "time", Reason: func(_ Impression, b Bounds, _ string) string {
			return fmt.Sprintf("more than %v before the newest event recorded", b.Lateness)
		}},
		{Code: RuleShownTwice, Field: "article_id", Reason: func(e Impression, _ Bounds, _ string) string {
			return fmt.Sprintf("request %q already showed article %q", e.RequestID, e.ArticleID)
		}},
	},
)

// ClickRules are the rules of a click.
var ClickRules = slices.Concat(
	idRules("event_id", func(e Click) string { return e.EventID }),
	idRules("request_id", func(e Click) string { return e.RequestID }),
	idRules("user_id", func(e Click) string { return e.UserID }),
	idRules("article_id", func(e Click) string { return e.ArticleID }),
	eventTimeRules(func(e Click) int64 { return e.Time }),
	[]Rule[Click]{
		{Code: RuleIDOfOtherKind, Field: "event_id", Reason: func(e Click, _ Bounds, _ string) string {
			return fmt.Sprintf("event id %q is an impression's already; every event needs its own id", e.EventID)
		}},
		{Code: RuleDuplicate},
		{Code: RuleNoImpression, Field: "request_id", Reason: func(e Click, b Bounds, _ string) string {
			return fmt.Sprintf("no impression of article %q in request %q (or it is more than %v before the newest event recorded)", e.ArticleID, e.RequestID, b.Lateness)
		}},
		{Code: RuleOtherReader, Field: "user_id", Reason: func(_ Click, _ Bounds, shownTo string) string {
			return fmt.Sprintf("the impression was shown to %q", shownTo)
		}},
		{Code: RuleClickedTwice, Field: "article_id", Reason: func(Click, Bounds, string) string {
			return "this impression is already clicked"
		}},
		// A click timed before its impression is refused, also when the
		// impression came in the same batch: the training rows built from
		// the server's logs label an impression clicked only by a click at
		// or after it (experiments.exposure.training_rows keeps click_time
		// >= time), so counting such a click online would give the model
		// features its training rows never had. Replay (serving.replay)
		// times each click at its impression, so parity is unaffected.
		{Code: RuleBeforeImpression, Field: "time", Reason: func(Click, Bounds, string) string {
			return "before its impression"
		}},
	},
)

// StateRules returns the codes of the rules on the state, in order.
func StateRules[T any](rules []Rule[T]) []string {
	var codes []string
	for _, r := range rules {
		if r.OnState() {
			codes = append(codes, r.Code)
		}
	}
	return codes
}

// RuleOf returns the rule of the table with the code.
func RuleOf[T any](rules []Rule[T], code string) (Rule[T], bool) {
	i := slices.IndexFunc(rules, func(r Rule[T]) bool { return r.Code == code })
	if i < 0 {
		return Rule[T]{}, false
	}
	return rules[i], true
}

// firstBroken returns the first rule needing no state that item breaks,
// and why; field is empty when it breaks none.
func firstBroken[T any](rules []Rule[T], item T, b Bounds) (field, reason string) {
	for _, r := range rules {
		if r.Check == nil {
			continue
		}
		if why := r.Check(item, b); why != "" {
			return r.Field, why
		}
	}
	return "", ""
}

// CheckArticle applies ArticleRules: the field and reason of the first one
// a broken, or "" for both.
func CheckArticle(a Article, b Bounds) (field, reason string) { return firstBroken(ArticleRules, a, b) }

// CheckImpression applies the rules of ImpressionRules that need no state.
func CheckImpression(e Impression, b Bounds) (field, reason string) {
	return firstBroken(ImpressionRules, e, b)
}

// CheckClick applies the rules of ClickRules that need no state.
func CheckClick(e Click, b Bounds) (field, reason string) { return firstBroken(ClickRules, e, b) }

// Refuse appends the refusal of item (its id, and where it sits in the batch,
// e.g. "impressions[3]") by the rule on the state with the code, or counts
// a duplicate. A code the table does not have is an error: a backend that
// answers one checks a rule the table does not list.
func Refuse[T any](r *Result, rules []Rule[T], code string, item T, id, at string, b Bounds, shownTo string) error {
	rule, ok := RuleOf(rules, code)
	if !ok || !rule.OnState() {
		return fmt.Errorf("no rule on the state has the code %q", code)
	}
	if code == RuleDuplicate {
		r.Duplicates++
		return nil
	}
	r.Refuse(id, at, rule.Field, rule.Reason(item, b, shownTo))
	return nil
}

// ErrBatchTooLarge is a call with more than MaxBatch items: nothing of it is
// recorded.
var ErrBatchTooLarge = errors.New("batch too large")

// BatchTooLargeError says which field of the call holds too many items.
type BatchTooLargeError struct {
	Field string // "articles", or "impressions" for impressions and clicks together
	N     int
}

func (e *BatchTooLargeError) Error() string {
	if e.Field == "articles" {
		return fmt.Sprintf("articles: %d exceed the limit of %d per call", e.N, MaxBatch)
	}
	return fmt.Sprintf("%s: %d events (impressions and clicks) exceed the limit of %d per call", e.Field, e.N, MaxBatch)
}

func (e *BatchTooLargeError) Unwrap() error { return ErrBatchTooLarge }

// CheckArticleBatch refuses more than MaxBatch articles in one call.
func CheckArticleBatch(n int) error {
	if n > MaxBatch {
		return &BatchTooLargeError{Field: "articles", N: n}
	}
	return nil
}

// CheckEventBatch refuses more than MaxBatch events in one call.
func CheckEventBatch(impressions, clicks int) error {
	if n := impressions + clicks; n > MaxBatch {
		return &BatchTooLargeError{Field: "impressions", N: n}
	}
	return nil
}

// Rejection names a refused item of a batch.
type Rejection struct {
	ID, Field, Reason string
}

// Result says what happened to a batch.
type Result struct {
	Accepted, Duplicates int
	Rejected             []Rejection
	// Version is the write's place in a Versioned state's log; 0 for a
	// state without one (every later read in the process sees the write).
	Version uint64
}

// Refuse lists item id, at its place in the batch (e.g. "impressions[3]"),
// as refused for field.
func (r *Result) Refuse(id, at, field, reason string) {
	r.Rejected = append(r.Rejected, Rejection{ID: id, Field: at + "." + field, Reason: reason})
}
