package embedded

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ranker/internal/features"
	"ranker/internal/features/backendtest"
)

// answers is what a state answers about a scenario: every article's
// neighbours and every feature of every candidate for each reader at each
// query time.
func answers(t *testing.T, sc *backendtest.Scenario, s *Store) (neighbours map[string][]string, rows [][][]float32) {
	t.Helper()
	neighbours = map[string][]string{}
	for id := range sc.Final {
		neighbours[id] = s.Neighbours(id)
	}
	for _, at := range sc.QueryTimes() {
		for user := range 4 {
			rows = append(rows, backendtest.FillAll(t, s, fmt.Sprint(user), at, sc.SortedIDs()))
		}
	}
	return neighbours, rows
}

// withoutNeighbourLists rewrites every log segment of dir as the previous
// version wrote it: articles without the neighbour lists they changed.
func withoutNeighbourLists(t testing.TB, dir string) {
	t.Helper()
	segments, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range segments {
		b, err := os.ReadFile(segmentPath(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		lists := 0
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 64<<20)
		for sc.Scan() {
			var rec record
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatal(err)
			}
			if rec.Neighbours != nil {
				lists++
			}
			rec.Neighbours = nil
			line, err := json.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			out.Write(append(line, '\n'))
		}
		if lists == 0 {
			t.Fatalf("%s: no line holds neighbour lists to remove", segmentPath(dir, n))
		}
		if err := os.WriteFile(segmentPath(dir, n), out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// A restart answers exactly as before it: from the snapshot (a clean stop),
// from the log with the neighbour lists each upsert logged (a crash), and
// from a log of the previous version, which holds none (searched once at
// the end of the replay). The scenarios upsert out of order, with edits
// that move articles in time, remove embeddings, and ties.
func TestARestartAnswersAsBefore(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			sc := backendtest.NewScenario(100+seed, 70)
			dir := t.TempDir()
			s := openWithDims(t, dir, sc.Dims)
			sc.Load(t, s)
			wantNeighbours, wantRows := answers(t, sc, s)
			full := 0
			for _, nbs := range wantNeighbours {
				if len(nbs) == s.spec.SemanticNeighbours {
					full++
				}
			}
			if full == 0 {
				t.Fatal("no article has a full list of neighbours: the scenario tests too little")
			}
			crashed, previous := t.TempDir(), t.TempDir()
			copyDir(t, dir, crashed)
			copyDir(t, dir, previous)
			withoutNeighbourLists(t, previous)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for name, d := range map[string]string{"clean stop": dir, "crash": crashed, "log of the previous version": previous} {
				again := openWithDims(t, d, sc.Dims)
				if _, err := os.Stat(filepath.Join(d, SnapshotFile)); d == previous && err != nil {
					t.Errorf("%s: no snapshot after the lists were searched, so the next start searches again: %v", name, err)
				}
				gotNeighbours, gotRows := answers(t, sc, again)
				for id, want := range wantNeighbours {
					if got := gotNeighbours[id]; !slices.Equal(got, want) {
						t.Fatalf("%s: neighbours of %s: got %v, want %v", name, id, got, want)
					}
				}
				for i := range wantRows {
					for j := range wantRows[i] {
						if !slices.EqualFunc(gotRows[i][j], wantRows[i][j], backendtest.SameFloat) {
							t.Fatalf("%s: query %d, candidate %d: got %v, want %v", name, i, j, gotRows[i][j], wantRows[i][j])
						}
					}
				}
			}
		})
	}
}

// A logged list that names an article the catalog never held is a damaged
// log: the restart fails naming the file and the line, rather than serving
// neighbours nobody computed.
func TestALoggedListNamingAnUnknownArticleFailsTheRestart(t *testing.T) {
	dir := t.TempDir()
	s := openWithDims(t, dir, 4)
	a := features.Article{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: axis(0, 1)}
	b := features.Article{ID: "2", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0 + hour, Embedding: axis(0, 1)}
	for _, batch := range [][]features.Article{{a}, {b}} {
		if res, err := s.UpsertArticles(context.Background(), batch); err != nil || res.Accepted != 1 {
			t.Fatalf("upsert: %+v %v", res, err)
		}
	}
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	path := segmentPath(crashed, 0)
	log, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := bytes.Replace(log, []byte(`"2":["1"]`), []byte(`"2":["9"]`), 1)
	if bytes.Equal(damaged, log) {
		t.Fatalf("%s: no logged list of article 2 naming article 1 in %s", path, log)
	}
	if err := os.WriteFile(path, damaged, 0o644); err != nil {
		t.Fatal(err)
	}
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	limits := features.DefaultLimits
	limits.EmbeddingDimensions = 4
	_, err = Open(crashed, spec, limits)
	if err == nil || !strings.Contains(err.Error(), "events.0.jsonl: line 2: ") || !strings.Contains(err.Error(), `unknown neighbour "9"`) {
		t.Fatalf("got %v, want an error naming events.0.jsonl, line 2 and the unknown neighbour", err)
	}
}

// upsertWhileRecording upserts the catalog, its first 100 articles first and
// the rest in calls of batch articles, while RecordEvents is called in a loop
// with 100 impressions of those first articles; it returns the longest
// RecordEvents call that overlapped the upsert and how many did.
func upsertWhileRecording(tb testing.TB, s *Store, catalog []features.Article, batch int) (longest time.Duration, calls int) {
	tb.Helper()
	upsertInBatches(tb, s, catalog[:100], 100) // the articles the events show
	upserted := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(upserted)
		for i := 100; i < len(catalog); i += batch {
			part := catalog[i:min(i+batch, len(catalog))]
			if res, err := s.UpsertArticles(context.Background(), part); err != nil || res.Accepted != len(part) {
				tb.Errorf("upsert of articles %d..%d: %+v %v", i, i+len(part)-1, res, err)
				return
			}
		}
	})
	defer wg.Wait()
	for n := 0; ; n++ {
		imps := make([]features.Impression, 100)
		for i := range imps {
			imps[i] = features.Impression{EventID: fmt.Sprint(n, "-", i), RequestID: fmt.Sprint("r", n), UserID: fmt.Sprint("u", i%10),
				ArticleID: catalog[i].ID, Time: backendtest.CatalogStart + int64(n)*1_000_000}
		}
		start := time.Now()
		res, err := s.RecordEvents(context.Background(), imps, nil)
		took := time.Since(start)
		if err != nil || res.Accepted != len(imps) {
			tb.Errorf("RecordEvents %d: %+v %v", n, res, err)
			<-upserted
			return longest, calls
		}
		select {
		case <-upserted:
			return longest, calls
		default:
			longest, calls = max(longest, took), calls+1
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// maxRecordEventsLatency is the longest a RecordEvents call may wait while
// the catalog is upserted. A call waits at most for one upsert's log write
// and installation (tens of milliseconds for 2,000 articles of 512
// components, but an fsync on a busy disk can take hundreds) on top of its
// own work. The bound is half the Go client's 2 s deadline; before the
// neighbour search left the writer lock, one call of 2,000 articles held it
// for over a second (7 calls got through in 8 s).
const maxRecordEventsLatency = time.Second

// Events recorded while the whole catalog is upserted are not held up by the
// neighbour search, and the lists come out exactly as a sequential upsert
// gives them: events move no neighbour.
func TestRecordEventsDoNotWaitForACatalogUpsert(t *testing.T) {
	spec, err := features.LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	articles := 6_000
	if testing.Short() {
		articles = 4_000
	}
	catalog := backendtest.CatalogWithEmbeddings(spec, articles, 2_000, features.DefaultEmbeddingDimensions, 2)
	s, err := Open(t.TempDir(), spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	longest, calls := upsertWhileRecording(t, s, catalog, 2_000)
	t.Logf("%d RecordEvents calls during the upsert of %d articles; the longest took %v", calls, articles, longest)
	if longest > maxRecordEventsLatency && !raceDetector {
		t.Errorf("the longest RecordEvents call during the upsert took %v, want at most %v", longest, maxRecordEventsLatency)
	}
	if calls < 10 {
		t.Fatalf("only %d RecordEvents calls overlapped the upsert: the test measures too little", calls)
	}

	sequential, err := Open("", spec, features.DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	upsertInBatches(t, sequential, catalog, 2_000)
	for _, a := range catalog {
		if got, want := s.Neighbours(a.ID), sequential.Neighbours(a.ID); !slices.Equal(got, want) {
			t.Fatalf("neighbours of %s: got %v with events recorded meanwhile, want %v as a sequential upsert gives", a.ID, got, want)
		}
	}
	if nbs := s.Neighbours(catalog[len(catalog)-1].ID); len(nbs) != spec.SemanticNeighbours {
		t.Fatalf("the newest article has %d neighbours, want %d", len(nbs), spec.SemanticNeighbours)
	}
}

// The log holds the lists, and a restart after a crash installs them rather
// than searching again: a logged list changed by hand (valid ids, another
// order) is what the restarted state answers.
func TestACrashReplayInstallsTheLoggedLists(t *testing.T) {
	dir := t.TempDir()
	s := openWithDims(t, dir, 4)
	catalog := []features.Article{
		{ID: "1", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0, Embedding: axis(0, 1)},
		{ID: "2", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0 + hour, Embedding: []float32{0.8, 0.6, 0, 0}},
		{ID: "3", Category: "c", Subcategory: "s", Title: "t", PublishTime: t0 + 2*hour, Embedding: axis(0, 1)},
	}
	if res, err := s.UpsertArticles(context.Background(), catalog); err != nil || res.Accepted != 3 {
		t.Fatalf("upsert: %+v %v", res, err)
	}
	if got, want := s.Neighbours("3"), []string{"1", "2"}; !slices.Equal(got, want) {
		t.Fatalf("neighbours of 3: got %v, want %v", got, want)
	}
	crashed := t.TempDir()
	copyDir(t, dir, crashed)
	path := segmentPath(crashed, 0)
	log, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := bytes.Replace(log, []byte(`"3":["1","2"]`), []byte(`"3":["2","1"]`), 1)
	if bytes.Equal(edited, log) {
		t.Fatalf("%s: no logged list of article 3 in %s", path, log)
	}
	if err := os.WriteFile(path, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	again := openWithDims(t, crashed, 4)
	if got, want := again.Neighbours("3"), []string{"2", "1"}; !slices.Equal(got, want) {
		t.Fatalf("neighbours of 3 after the replay: got %v, want the logged %v", got, want)
	}
}
