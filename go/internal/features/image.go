package features

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Image is the State as plain data with exported fields, which the
// embedded store's snapshot encodes with gob: gob matches fields by name,
// so these names (and those of the types below) are part of that file's
// format. Large maps are parallel slices, which gob decodes several times
// faster than maps.
type Image struct {
	Articles   map[string]Article
	ArticleLog map[string]CounterImage
	// Each article's semantic neighbours, by id, found among embeddings of
	// EmbeddingDimensions components: finding them again would take a
	// pass over the catalog per article.
	Neighbours          map[string][]string
	EmbeddingDimensions int
	Users               map[string]UserImage
	Impressions         ShownImage
	EventIDs            []string
	EventTimes          []int64
	// ClickIDs are the EventIDs that are clicks'; none in an image written
	// before they were kept, whose ids then all count as impressions'.
	ClickIDs  []string
	Recorded  int
	Watermark int64
	ExactFrom int64
}

// CounterImage is a counter's running totals by time.
type CounterImage struct{ Times, Shows, Clicks []int64 }

// ReadImage is one click of a reader's history.
type ReadImage struct {
	Time    int64
	Article string
}

// UserImage is a reader's history.
type UserImage struct {
	All                       CounterImage
	ByCategory, BySubcategory map[string]CounterImage
	Visits                    []int64
	Reads                     []ReadImage
}

// ShownImage holds the impressions kept for their clicks, as parallel
// slices.
type ShownImage struct {
	Keys, Users, Categories, Subcategories []string
	Times                                  []int64
	Clicked                                []bool
}

func toImage(c *counter) CounterImage {
	return CounterImage{Times: c.times, Shows: c.shows, Clicks: c.clicks}
}

func fromImage(c CounterImage) counter {
	return counter{times: c.Times, shows: c.Shows, clicks: c.Clicks}
}

// Image returns the state as data. It shares the state's slices: the
// caller encodes it before the writer changes the state again, and only
// the writer calls it.
func (s *State) Image() *Image {
	s.mu.RLock()
	defer s.mu.RUnlock()
	img := &Image{
		Articles:   make(map[string]Article, len(s.articles)),
		ArticleLog: make(map[string]CounterImage, len(s.articles)),
		Users:      make(map[string]UserImage, len(s.users)),
		Recorded:   s.recorded,
		Watermark:  s.watermark,
		ExactFrom:  s.exactFrom,

		Neighbours:          make(map[string][]string),
		EmbeddingDimensions: s.dims,
	}
	for id, a := range s.articles {
		img.Articles[id] = a.Article
		img.ArticleLog[id] = toImage(&a.events)
		if len(a.neighbours) > 0 {
			ids := make([]string, len(a.neighbours))
			for i, nb := range a.neighbours {
				ids[i] = nb.ID
			}
			img.Neighbours[id] = ids
		}
	}
	for id, u := range s.users {
		img.Users[id] = u.image()
	}
	// A folded reader is written as the counters it thaws into (the
	// snapshot's format is unchanged), and folded again on load.
	for id, r := range s.idle {
		img.Users[id] = r.thaw().image()
	}
	for id, t := range s.events {
		img.EventIDs = append(img.EventIDs, id)
		img.EventTimes = append(img.EventTimes, t)
	}
	for id := range s.clickIDs {
		img.ClickIDs = append(img.ClickIDs, id)
	}
	imp := &img.Impressions
	for k, v := range s.impressions {
		imp.Keys, imp.Users = append(imp.Keys, k), append(imp.Users, v.user)
		imp.Categories, imp.Subcategories = append(imp.Categories, v.category), append(imp.Subcategories, v.subcategory)
		imp.Times, imp.Clicked = append(imp.Times, v.time), append(imp.Clicked, v.clicked)
	}
	return img
}

func (u *userState) image() UserImage {
	su := UserImage{All: toImage(&u.all), Visits: u.visits,
		ByCategory: make(map[string]CounterImage, len(u.byCategory)), BySubcategory: make(map[string]CounterImage, len(u.bySubcategory))}
	for k, c := range u.byCategory {
		su.ByCategory[k] = toImage(c)
	}
	for k, c := range u.bySubcategory {
		su.BySubcategory[k] = toImage(c)
	}
	for _, r := range u.reads {
		su.Reads = append(su.Reads, ReadImage{Time: r.time, Article: r.article})
	}
	return su
}

// StateFromImage returns the state an image holds, for embeddings of dims
// components: when the image was taken with another width, every article's
// neighbours are found again.
func StateFromImage(spec *Spec, dims int, img *Image) (*State, error) {
	st := NewState(spec, dims)
	for id, a := range img.Articles {
		as := &articleState{Article: a, vector: TitleVector(a.Title, st.spec.TitleDimensions), order: ReadOrderKey(id), events: fromImage(img.ArticleLog[id])}
		as.sem = NewSemantic(&as.Article, as.order, st.dims)
		st.articles[id] = as
		if as.sem != nil {
			st.byPublish = append(st.byPublish, as)
		}
	}
	slices.SortFunc(st.byPublish, func(a, b *articleState) int { return cmp.Compare(a.PublishTime, b.PublishTime) })
	if img.EmbeddingDimensions == st.dims {
		for id, ids := range img.Neighbours {
			a := st.articles[id]
			if a == nil {
				return nil, fmt.Errorf("neighbours of unknown article %q", id)
			}
			for _, nb := range ids {
				n := st.articles[nb]
				if n == nil {
					return nil, fmt.Errorf("article %q has unknown neighbour %q", id, nb)
				}
				a.neighbours = append(a.neighbours, n)
			}
		}
	} else {
		// Other embeddings count now (--embedding-dimensions changed): find
		// every article's neighbours again.
		st.neighboursStale = true
		st.RebuildNeighbours()
	}
	for id, su := range img.Users {
		u := &userState{all: fromImage(su.All), visits: su.Visits,
			byCategory: make(map[string]*counter, len(su.ByCategory)), bySubcategory: make(map[string]*counter, len(su.BySubcategory))}
		for k, c := range su.ByCategory {
			c := fromImage(c)
			u.byCategory[k] = &c
		}
		for k, c := range su.BySubcategory {
			c := fromImage(c)
			u.bySubcategory[k] = &c
		}
		for _, r := range su.Reads {
			u.reads = append(u.reads, read{time: r.Time, article: r.Article})
		}
		st.users[id] = u
	}
	imp := &img.Impressions
	if n := len(imp.Keys); len(imp.Users) != n || len(imp.Categories) != n || len(imp.Subcategories) != n || len(imp.Times) != n || len(imp.Clicked) != n ||
		len(img.EventIDs) != len(img.EventTimes) {
		return nil, errors.New("inconsistent lengths")
	}
	st.impressions = make(map[string]*shown, len(imp.Keys))
	shownAll := make([]shown, len(imp.Keys)) // one allocation for all of them
	for i, k := range imp.Keys {
		shownAll[i] = shown{user: imp.Users[i], category: imp.Categories[i], subcategory: imp.Subcategories[i], time: imp.Times[i], clicked: imp.Clicked[i]}
		st.impressions[k] = &shownAll[i]
	}
	st.events = make(map[string]int64, len(img.EventIDs))
	for i, id := range img.EventIDs {
		st.events[id] = img.EventTimes[i]
	}
	st.clickIDs = make(map[string]bool, len(img.ClickIDs))
	for _, id := range img.ClickIDs {
		st.clickIDs[id] = true
	}
	st.recorded, st.watermark, st.exactFrom = img.Recorded, img.Watermark, img.ExactFrom
	if st.exactFrom != math.MinInt64 {
		st.foldIdle(st.exactFrom, func() {})
	}
	return st, nil
}

// Stored is a validated article as the state keeps it: its embedding
// quantised, the floats dropped.
func (sp *Spec) Stored(a Article) Article {
	a.Quantised, a.Embedding = sp.Quantise(a.Embedding), nil
	return a
}
