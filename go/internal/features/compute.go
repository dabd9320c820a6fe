package features

import (
	"math"
	"time"
)

// The computation of the features from facts about the reader and each
// candidate, shared by every state backend: only how the facts are gathered
// differs between the embedded state and Redis.

// ReaderFacts are the reader's history before the Rank time.
type ReaderFacts struct {
	Shows, Clicks int64
	LastVisit     int64
	Visited       bool
	Profile       []float64 // nil when the reader has clicked nothing (see TitleProfile)
	// The semantic profiles of the last RecentReads and LongTermReads
	// clicks (see SemanticProfiles); nil when the reader has clicked
	// nothing or no column asks.
	Recent, LongTerm *Profile
}

// ArticleFacts are a candidate's catalog entry and counts before the Rank
// time; Article is nil for an id the catalog does not know.
type ArticleFacts struct {
	Article               *Article
	Vector                []float32   // TitleVector of its title
	Counts                [3][2]int64 // shows and clicks before each of Spec.Windows
	Category, Subcategory [2]int64    // the reader's shows and clicks in the article's sections
	Sem                   *Semantic   // nil without an embedding
	Neighbours            int         // how many semantic neighbours the article has
	NeighbourCounts       [2]int64    // their shows and clicks before t
}

// Windows returns the three times the article counts are taken before: the
// Rank time, and the short and long windows before it.
func (sp *Spec) Windows(t int64) [3]int64 {
	h := int64(time.Hour / time.Microsecond)
	return [3]int64{t, t - sp.ArticleWindowsHours[0]*h, t - sp.ArticleWindowsHours[1]*h}
}

// Compute writes the features at cols of names for each candidate into rows
// (row-major, len(names) columns) from the facts a backend gathered, and
// returns the ids the catalog does not know.
func (sp *Spec) Compute(q Query, r ReaderFacts, ids []string, facts []ArticleFacts, names []string, cols []int, rows []float32) (unknown []string) {
	kinds := make([]int, len(cols)) // the engine's index of each column's feature, or -1
	for i, j := range cols {
		k, ok := featureIndex[names[j]]
		if !ok {
			k = -1
		}
		kinds[i] = k
	}
	f := len(names)
	var values [numFeatures]float32
	sp.contextValues(q, r, values[:numContext])
	for i := range ids {
		if facts[i].Article == nil {
			unknown = append(unknown, ids[i])
		}
		sp.candidateValues(q, r, facts[i], values[numContext:])
		row := rows[i*f : (i+1)*f]
		for c, j := range cols {
			if k := kinds[c]; k >= 0 {
				row[j] = values[k]
			}
		}
	}
	return unknown
}

// Computable reports whether the engine computes the named feature.
func Computable(name string) bool {
	_, ok := featureIndex[name]
	return ok
}

// DependsOnArticle reports whether the named feature describes the candidate
// article, so it is missing for an article the catalog does not know.
func DependsOnArticle(name string) bool {
	k, ok := featureIndex[name]
	return ok && k >= numContext
}

// The features the engine computes, by name; context features first.
const (
	hourOfDay = iota
	dayOfWeek
	deviceCode
	userPriorImpressions
	userPriorClicks
	userPriorCTR
	userIsColdStart
	userHoursSinceLastVisit
	numContext

	articleAgeHours = iota - 1
	articleWordCount
	articleBreaking
	articleImpressionsShort
	articleClicksShort
	articleImpressionsLong
	articleClicksLong
	articleCTRLong
	articlePriorCTR
	userCategoryPriorImpressions
	userCategoryCTR
	userSubcategoryCTR
	titleSimilarity
	semanticSimilarityRecent
	semanticSimilarityLongTerm
	articleSemanticPriorCTR
	numFeatures
)

// featureIndex maps the specification's names to the constants above; a
// test holds it to spec.json, in both directions.
var featureIndex = map[string]int{
	"hour_of_day":                     hourOfDay,
	"day_of_week":                     dayOfWeek,
	"device_code":                     deviceCode,
	"user_prior_impressions":          userPriorImpressions,
	"user_prior_clicks":               userPriorClicks,
	"user_prior_ctr":                  userPriorCTR,
	"user_is_cold_start":              userIsColdStart,
	"user_hours_since_last_visit":     userHoursSinceLastVisit,
	"article_age_hours":               articleAgeHours,
	"article_word_count":              articleWordCount,
	"article_breaking":                articleBreaking,
	"article_impressions_1h":          articleImpressionsShort,
	"article_clicks_1h":               articleClicksShort,
	"article_impressions_24h":         articleImpressionsLong,
	"article_clicks_24h":              articleClicksLong,
	"article_ctr_24h":                 articleCTRLong,
	"article_prior_ctr":               articlePriorCTR,
	"user_category_prior_impressions": userCategoryPriorImpressions,
	"user_category_ctr":               userCategoryCTR,
	"user_subcategory_ctr":            userSubcategoryCTR,
	"title_similarity":                titleSimilarity,
	"semantic_similarity_recent":      semanticSimilarityRecent,
	"semantic_similarity_longterm":    semanticSimilarityLongTerm,
	"article_semantic_prior_ctr":      articleSemanticPriorCTR,
}

// smoothedCTR is (clicks + prior clicks) / (impressions + prior impressions),
// in float64 and then float32, as polars computes it.
func (sp *Spec) smoothedCTR(clicks, shows int64) float32 {
	p := sp.CTRPrior
	return float32((float64(clicks) + p.Clicks) / (float64(shows) + p.Impressions))
}

// hours converts a duration in microseconds to hours as polars'
// dt.total_seconds() / 3600 does: whole seconds, truncated toward zero.
func hours(us int64) float32 {
	return float32(float64(us/1_000_000) / 3600.0)
}

// contextValues writes the reader's and the moment's features into v.
func (sp *Spec) contextValues(q Query, r ReaderFacts, v []float32) {
	t := time.UnixMicro(q.Time).UTC()
	v[hourOfDay] = float32(t.Hour())
	v[dayOfWeek] = float32((int(t.Weekday()) + 6) % 7) // Monday is 0
	v[deviceCode] = float32(math.NaN())
	for i, d := range sp.Devices {
		if d == q.Device {
			v[deviceCode] = float32(i)
		}
	}
	v[userPriorImpressions] = float32(r.Shows)
	v[userPriorClicks] = float32(r.Clicks)
	v[userPriorCTR] = sp.smoothedCTR(r.Clicks, r.Shows)
	v[userIsColdStart] = 0
	if r.Shows == 0 {
		v[userIsColdStart] = 1
	}
	v[userHoursSinceLastVisit] = float32(math.NaN())
	if r.Visited {
		v[userHoursSinceLastVisit] = hours(q.Time - r.LastVisit)
	}
}

// candidateValues writes one candidate's features into v, indexed from
// articleAgeHours; NaN for an article the catalog does not know.
func (sp *Spec) candidateValues(q Query, r ReaderFacts, f ArticleFacts, v []float32) {
	const first = articleAgeHours
	a := f.Article
	if a == nil {
		nan := float32(math.NaN())
		for i := range v {
			v[i] = nan
		}
		return
	}
	v[articleAgeHours-first] = hours(q.Time - a.PublishTime)
	v[articleWordCount-first] = float32(a.WordCount)
	v[articleBreaking-first] = 0
	if a.Breaking {
		v[articleBreaking-first] = 1
	}
	all, short, long := f.Counts[0], f.Counts[1], f.Counts[2]
	v[articleImpressionsShort-first] = float32(all[0] - short[0])
	v[articleClicksShort-first] = float32(all[1] - short[1])
	v[articleImpressionsLong-first] = float32(all[0] - long[0])
	v[articleClicksLong-first] = float32(all[1] - long[1])
	v[articleCTRLong-first] = sp.smoothedCTR(all[1]-long[1], all[0]-long[0])
	v[articlePriorCTR-first] = float32(math.NaN()) // never shown: missing, not zero
	if all[0] > 0 {
		v[articlePriorCTR-first] = float32(float64(all[1]) / float64(all[0]))
	}
	v[userCategoryPriorImpressions-first] = float32(f.Category[0])
	v[userCategoryCTR-first] = sp.smoothedCTR(f.Category[1], f.Category[0])
	v[userSubcategoryCTR-first] = sp.smoothedCTR(f.Subcategory[1], f.Subcategory[0])
	v[titleSimilarity-first] = float32(math.NaN())
	if r.Profile != nil {
		v[titleSimilarity-first] = float32(dot(r.Profile, f.Vector))
	}
	// Cheap when no column asks: the profiles are nil, and so are the
	// neighbours gathered.
	v[semanticSimilarityRecent-first] = r.Recent.similarity(f.Sem)
	v[semanticSimilarityLongTerm-first] = r.LongTerm.similarity(f.Sem)
	v[articleSemanticPriorCTR-first] = float32(math.NaN())
	if f.Neighbours > 0 {
		v[articleSemanticPriorCTR-first] = sp.smoothedCTR(f.NeighbourCounts[1], f.NeighbourCounts[0])
	}
}

// TitleProfile is the normalised float64 sum of the title vectors of the
// reader's last RecentReads clicks, given newest first, summed in that
// order as the Python pipeline does.
func (sp *Spec) TitleProfile(newestFirst [][]float32) []float64 {
	profile := make([]float64, sp.TitleDimensions)
	for _, v := range newestFirst {
		for d := range profile {
			profile[d] += float64(v[d])
		}
	}
	var sq float64
	for _, p := range profile {
		sq += float64(p * p) // the conversion forbids a fused multiply-add
	}
	if norm := math.Sqrt(sq); norm > 0 {
		for d := range profile {
			profile[d] /= norm
		}
	} else {
		clear(profile)
	}
	return profile
}

// dot sums p[d]*v[d] in index order, as the Python pipeline does.
func dot(p []float64, v []float32) float64 {
	var s float64
	for d, x := range p {
		s += float64(x * float64(v[d]))
	}
	return s
}
