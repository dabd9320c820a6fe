package features

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis keeps the feature state in Redis, so that several server replicas
// rank from the same state. Every event is applied by one Lua script, which
// checks it against the state and updates every count atomically, so
// replicas recording at once cannot count an event twice. Counts are sorted
// sets scored by event time with one member per event: "events strictly
// before t" is ZCOUNT key -inf (t, the same answer the embedded state gives.
// Redis keeps the whole history (no pruning): size its memory for it.
type Redis struct {
	client  *redis.Client
	spec    *Spec
	limits  Limits
	prefix  string
	now     func() time.Time
	timeout time.Duration
}

var _ Service = (*Redis)(nil)

// OpenRedis connects to the Redis at url (redis://host:port/db); timeout
// bounds each call, so a Rank answers (with the state's features missing)
// when Redis does not. It does not fail when Redis is down: requests then
// report the state as unavailable.
func OpenRedis(url string, spec *Spec, limits Limits, timeout time.Duration) (*Redis, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = timeout, timeout, timeout, timeout
	opts.MaxRetries = 1
	if limits.EmbeddingDimensions < 1 || limits.EmbeddingDimensions > MaxEmbeddingDimensions {
		return nil, fmt.Errorf("embedding dimensions: %d, want 1 to %d", limits.EmbeddingDimensions, MaxEmbeddingDimensions)
	}
	return &Redis{client: redis.NewClient(opts), spec: spec, limits: limits, prefix: "ranker:", now: time.Now, timeout: timeout}, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

func (r *Redis) key(parts ...string) string { return r.prefix + strings.Join(parts, "\x00") }

func micros(t int64) string { return strconv.FormatInt(t, 10) }

func (r *Redis) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// UpsertArticles validates and stores catalog entries, and brings the
// semantic neighbours up to date as the embedded state does (see
// State.applyArticles). It reads the catalog, computes, and writes in one
// transaction that fails, and is tried again, if another replica changed
// the catalog meanwhile: every upsert bumps the key "catalog".
//
// Each Redis call is bounded by the client's timeouts, not the whole upsert:
// the neighbour search between the calls may take longer than one call may.
func (r *Redis) UpsertArticles(ctx context.Context, articles []Article) (Result, error) {
	var res Result
	var batch []Article
	for i, a := range articles {
		if field, reason := checkArticle(a, r.limits.EmbeddingDimensions); field != "" {
			res.rejecter(a.ID, fmt.Sprintf("articles[%d]", i))(field, reason)
			continue
		}
		batch = append(batch, r.spec.stored(a))
	}
	res.Accepted = len(batch)
	if len(batch) == 0 {
		return res, nil
	}
	const attempts = 20
	for range attempts {
		err := r.client.Watch(ctx, func(tx *redis.Tx) error { return r.upsert(ctx, tx, batch) }, r.key("catalog"))
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if err != nil {
			return Result{}, fmt.Errorf("redis: %w", err)
		}
		return res, nil
	}
	return Result{}, fmt.Errorf("redis: the catalog changed under %d attempts in a row", attempts)
}

// packEmbedding is the Redis form of a quantised embedding: little-endian
// int16s.
func packEmbedding(q []int16) []byte {
	b := make([]byte, 2*len(q))
	for d, x := range q {
		binary.LittleEndian.PutUint16(b[2*d:], uint16(x))
	}
	return b
}

// unpackEmbedding reverses packEmbedding; nil unless it has dims components.
func unpackEmbedding(b string, dims int) []int16 {
	if len(b) != 2*dims {
		return nil
	}
	q := make([]int16, dims)
	for d := range q {
		q[d] = int16(binary.LittleEndian.Uint16([]byte(b[2*d : 2*d+2])))
	}
	return q
}

// upsert writes the batch and the neighbour lists it changes, within tx.
func (r *Redis) upsert(ctx context.Context, tx *redis.Tx, batch []Article) error {
	dims, window := r.limits.EmbeddingDimensions, r.spec.neighbourWindow()
	pub := r.key("pub") // the articles with an embedding, scored by publish time
	// The batch as it will be stored: the last entry of each id.
	final := make(map[string]*embedded, len(batch))
	for i := range batch {
		a := &batch[i]
		final[a.ID] = newEmbedded(a, ReadOrderKey(a.ID), dims)
	}
	pipe := tx.Pipeline()
	old := make(map[string]*redis.FloatCmd, len(final))
	oldVector := make(map[string]*redis.StringCmd, len(final))
	for id := range final {
		old[id] = pipe.ZScore(ctx, pub, id)
		oldVector[id] = pipe.HGet(ctx, r.key("a", id), "emb")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	var moved []int64
	for id, e := range final {
		p, err := old[id].Result()
		if err == nil && e != nil && int64(p) == e.publish && oldVector[id].Val() == string(packEmbedding(e.q)) {
			// The same vector at the same time: no article's neighbours change.
			delete(final, id)
			continue
		}
		if err == nil {
			moved = append(moved, int64(p))
		}
		if e != nil {
			moved = append(moved, e.publish)
		}
	}
	// Whose neighbours change: the batch's, and those published up to a
	// window after a time the batch moved.
	targets := map[string]bool{}
	for id := range final {
		targets[id] = true
	}
	for _, span := range spans(moved, window) {
		ids, err := tx.ZRangeArgs(ctx, redis.ZRangeArgs{Key: pub, ByScore: true, Start: "(" + micros(span[0]), Stop: micros(span[1])}).Result()
		if err != nil {
			return err
		}
		for _, id := range ids {
			targets[id] = true
		}
	}
	// The catalog they need: each target and the window before it, read
	// from Redis, with the batch in place of what it replaces.
	var need []int64
	for id := range targets {
		if e, inBatch := final[id]; inBatch {
			if e != nil {
				need = append(need, e.publish-window)
			}
		} else if p, err := tx.ZScore(ctx, pub, id).Result(); err == nil {
			need = append(need, int64(p)-window)
		} else if !errors.Is(err, redis.Nil) {
			return err
		}
	}
	catalog, err := r.window(ctx, tx, spans(need, window), final)
	if err != nil {
		return err
	}
	index := make(map[string]int, len(catalog))
	for i, e := range catalog {
		index[e.id] = i
	}
	// A target outside the batch whose list holds no article of the batch
	// keeps the rest of its window as it was: its new list is the best of
	// its old list and the batch's articles now in its window (one
	// comparison each, not a scan of the week).
	pipe = tx.Pipeline()
	oldLists := map[string]*redis.StringCmd{}
	for id := range targets {
		if _, inBatch := final[id]; !inBatch {
			oldLists[id] = pipe.HGet(ctx, r.key("a", id), "nb")
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	lists := map[string][]string{}
	for id := range targets {
		i, ok := index[id]
		if !ok {
			continue // no embedding: no neighbours
		}
		c := catalog[i]
		lo := sort.Search(len(catalog), func(i int) bool { return catalog[i].publish >= c.publish-window })
		hi := sort.Search(len(catalog), func(i int) bool { return catalog[i].publish >= c.publish })
		pool := catalog[lo:hi]
		if cmd, kept := oldLists[id]; kept {
			var before []string
			if v := cmd.Val(); v != "" {
				before = strings.Split(v, "\x00")
			}
			if !slices.ContainsFunc(before, func(n string) bool { _, inBatch := final[n]; return inBatch }) {
				pool = pool[:0:0]
				for _, n := range before {
					if k, ok := index[n]; ok {
						pool = append(pool, catalog[k])
					}
				}
				for n, e := range final {
					if k, ok := index[n]; ok && e != nil && n != id && e.publish >= c.publish-window && e.publish < c.publish {
						pool = append(pool, catalog[k])
					}
				}
			}
		}
		for _, j := range r.spec.nearest(c, len(pool), func(k int) *embedded { return pool[k] }) {
			lists[id] = append(lists[id], pool[j].id)
		}
	}
	_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, a := range batch {
			k := r.key("a", a.ID)
			breaking := "0"
			if a.Breaking {
				breaking = "1"
			}
			p.HSet(ctx, k, "category", a.Category, "subcategory", a.Subcategory, "title", a.Title,
				"word_count", a.WordCount, "publish_time", micros(a.PublishTime), "breaking", breaking)
			if len(a.Quantised) > 0 {
				p.HSet(ctx, k, "emb", packEmbedding(a.Quantised))
			} else {
				p.HDel(ctx, k, "emb")
			}
			p.SAdd(ctx, r.key("articles"), a.ID)
		}
		for id, e := range final {
			if e != nil {
				p.ZAdd(ctx, pub, redis.Z{Score: float64(e.publish), Member: id})
			} else {
				p.ZRem(ctx, pub, id)
			}
		}
		for id := range targets {
			if l := lists[id]; len(l) > 0 {
				p.HSet(ctx, r.key("a", id), "nb", strings.Join(l, "\x00"))
			} else {
				p.HDel(ctx, r.key("a", id), "nb")
			}
		}
		p.Incr(ctx, r.key("catalog"))
		return nil
	})
	return err
}

// window reads the embeddings published in the closed spans [from, to] of
// the index, replaces those of the batch (final) by their new state, and
// returns them by publish time.
func (r *Redis) window(ctx context.Context, tx *redis.Tx, spans [][2]int64, final map[string]*embedded) ([]*embedded, error) {
	var out []*embedded
	for _, span := range spans {
		members, err := tx.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: r.key("pub"), ByScore: true, Start: micros(span[0]), Stop: micros(span[1])}).Result()
		if err != nil {
			return nil, err
		}
		pipe := tx.Pipeline()
		vectors := make([]*redis.StringCmd, len(members))
		for i, m := range members {
			if _, inBatch := final[m.Member.(string)]; !inBatch {
				vectors[i] = pipe.HGet(ctx, r.key("a", m.Member.(string)), "emb")
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, m := range members {
			if vectors[i] == nil {
				continue
			}
			id := m.Member.(string)
			a := Article{ID: id, PublishTime: int64(m.Score), Quantised: unpackEmbedding(vectors[i].Val(), r.limits.EmbeddingDimensions)}
			if e := newEmbedded(&a, ReadOrderKey(id), r.limits.EmbeddingDimensions); e != nil {
				out = append(out, e)
			}
		}
	}
	for _, e := range final {
		if e != nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *embedded) int { return cmp.Compare(a.publish, b.publish) })
	return out, nil
}

// impressionScript applies one impression: ARGV prefix, event id, request,
// user, article, time, lateness (µs), ttl (ms). It answers "ok" or why not.
var impressionScript = redis.NewScript(`
local p, id, req, user, art, t = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', p .. 'e' .. '\0' .. id) == 1 then return 'duplicate' end
local a = redis.call('HMGET', p .. 'a' .. '\0' .. art, 'category', 'subcategory')
if not a[1] then return 'article_id' end
local ik = p .. 'i' .. '\0' .. req .. '\0' .. art
if redis.call('EXISTS', ik) == 1 then return 'shown' end
local wm = redis.call('GET', p .. 'wm')
if wm and tonumber(wm) - tonumber(t) > tonumber(ARGV[7]) then return 'late' end
redis.call('SET', p .. 'e' .. '\0' .. id, '1', 'PX', ARGV[8])
redis.call('HSET', ik, 'user', user, 'category', a[1], 'subcategory', a[2], 'time', t, 'clicked', '0')
redis.call('PEXPIRE', ik, ARGV[8])
redis.call('ZADD', p .. 'as' .. '\0' .. art, t, id)
redis.call('ZADD', p .. 'us' .. '\0' .. user, t, id)
redis.call('ZADD', p .. 'ucs' .. '\0' .. user .. '\0' .. a[1], t, id)
redis.call('ZADD', p .. 'uss' .. '\0' .. user .. '\0' .. a[2], t, id)
redis.call('ZADD', p .. 'uv' .. '\0' .. user, t, t)
redis.call('SADD', p .. 'users', user)
redis.call('INCR', p .. 'n')
if not wm or tonumber(t) > tonumber(wm) then redis.call('SET', p .. 'wm', t) end
return 'ok'
`)

// clickScript applies one click: ARGV prefix, event id, request, user,
// article, time, ttl (ms), read-order key. It counts the click at its
// impression's time, as the training rows do.
var clickScript = redis.NewScript(`
local p, id, req, user, art, t = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', p .. 'e' .. '\0' .. id) == 1 then return 'duplicate' end
local ik = p .. 'i' .. '\0' .. req .. '\0' .. art
local imp = redis.call('HMGET', ik, 'user', 'category', 'subcategory', 'time', 'clicked')
if not imp[1] then return 'request_id' end
if imp[1] ~= user then return 'user_id:' .. imp[1] end
if imp[5] == '1' then return 'clicked' end
if tonumber(t) < tonumber(imp[4]) then return 'before' end
local at = imp[4]
redis.call('SET', p .. 'e' .. '\0' .. id, '1', 'PX', ARGV[7])
redis.call('HSET', ik, 'clicked', '1')
redis.call('ZADD', p .. 'ac' .. '\0' .. art, at, id)
redis.call('ZADD', p .. 'uc' .. '\0' .. user, at, id)
redis.call('ZADD', p .. 'ucc' .. '\0' .. user .. '\0' .. imp[2], at, id)
redis.call('ZADD', p .. 'usc' .. '\0' .. user .. '\0' .. imp[3], at, id)
redis.call('ZADD', p .. 'ur' .. '\0' .. user, at, ARGV[8] .. '\0' .. art .. '\0' .. id)
redis.call('INCR', p .. 'n')
local wm = redis.call('GET', p .. 'wm')
if not wm or tonumber(t) > tonumber(wm) then redis.call('SET', p .. 'wm', t) end
return 'ok'
`)

// RecordEvents validates and records a batch, each event atomically.
func (r *Redis) RecordEvents(ctx context.Context, impressions []Impression, clicks []Click) (Result, error) {
	var res Result
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	for _, s := range []*redis.Script{impressionScript, clickScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return Result{}, fmt.Errorf("redis: %w", err)
		}
	}
	future := r.now().Add(r.limits.ClockSkew).UnixMicro()
	ttl := strconv.FormatInt(max(r.limits.Lateness.Milliseconds(), 1), 10)
	pipe := r.client.Pipeline()
	type pending struct {
		cmd    *redis.Cmd
		reject func(field, reason string)
	}
	var sent []pending
	for i, e := range impressions {
		reject := res.rejecter(e.EventID, fmt.Sprintf("impressions[%d]", i))
		if field, reason := checkImpression(e, future, r.spec.Devices); field != "" {
			reject(field, reason)
			continue
		}
		cmd := impressionScript.EvalSha(ctx, pipe, nil, r.prefix, e.EventID, e.RequestID, e.UserID, e.ArticleID,
			micros(e.Time), r.limits.Lateness.Microseconds(), ttl)
		sent = append(sent, pending{cmd, reject})
	}
	for i, e := range clicks {
		reject := res.rejecter(e.EventID, fmt.Sprintf("clicks[%d]", i))
		if field, reason := checkClick(e, future); field != "" {
			reject(field, reason)
			continue
		}
		cmd := clickScript.EvalSha(ctx, pipe, nil, r.prefix, e.EventID, e.RequestID, e.UserID, e.ArticleID,
			micros(e.Time), ttl, ReadOrderKey(e.ArticleID))
		sent = append(sent, pending{cmd, reject})
	}
	if len(sent) == 0 {
		return res, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		// Some events of the batch may have been applied; a retry with the
		// same event ids counts each once.
		return Result{}, fmt.Errorf("redis: %w", err)
	}
	for _, p := range sent {
		answer, err := p.cmd.Text()
		if err != nil {
			return Result{}, fmt.Errorf("redis: %w", err)
		}
		switch {
		case answer == "ok":
			res.Accepted++
		case answer == "duplicate":
			res.Duplicates++
		case answer == "article_id":
			p.reject("article_id", "the article is not in the catalog (UpsertArticles first)")
		case answer == "shown":
			p.reject("article_id", "this request already showed the article")
		case answer == "late":
			p.reject("time", fmt.Sprintf("more than %v before the newest event recorded", r.limits.Lateness))
		case answer == "request_id":
			p.reject("request_id", "no impression of the article in that request (or it is older than the lateness bound)")
		case strings.HasPrefix(answer, "user_id:"):
			p.reject("user_id", fmt.Sprintf("the impression was shown to %q", strings.TrimPrefix(answer, "user_id:")))
		case answer == "clicked":
			p.reject("article_id", "this impression is already clicked")
		case answer == "before":
			p.reject("time", "before its impression")
		default:
			return Result{}, fmt.Errorf("redis: unexpected answer %q", answer)
		}
	}
	return res, nil
}

// Counts reports articles, readers, events recorded and articles with an
// embedding (0 when Redis does not answer).
func (r *Redis) Counts() (articles, readers, events, embeddings int) {
	ctx, cancel := r.bounded(context.Background())
	defer cancel()
	pipe := r.client.Pipeline()
	a := pipe.SCard(ctx, r.key("articles"))
	u := pipe.SCard(ctx, r.key("users"))
	n := pipe.Get(ctx, r.key("n"))
	e := pipe.ZCard(ctx, r.key("pub"))
	_, _ = pipe.Exec(ctx) // each result below carries its own error
	events, _ = n.Int()
	return int(a.Val()), int(u.Val()), events, int(e.Val())
}

// fillScript reads everything one Rank needs in one call: ARGV prefix, user,
// t, t - short window, t - long window, recent reads (titles), semantic
// reads (embeddings), whether to read candidates' embeddings (1 or 0) and
// their neighbours' counts (1 or 0), then candidate ids. It answers the
// reader's shows, clicks, last visit (or ""), the titles of the recent reads
// and the embeddings of the semantic reads (newest first; "" for none), then
// per candidate either false (unknown) or its catalog fields, counts,
// embedding ("" for none or not asked), and its neighbours' number, shows
// and clicks before t.
var fillScript = redis.NewScript(`
local p, user = ARGV[1], ARGV[2]
local b0, b1, b2 = '(' .. ARGV[3], '(' .. ARGV[4], '(' .. ARGV[5]
local nTitles, nEmbs = tonumber(ARGV[6]), tonumber(ARGV[7])
local wantEmb, wantPrior = ARGV[8] == '1', ARGV[9] == '1'
local out = {}
out[1] = redis.call('ZCOUNT', p .. 'us' .. '\0' .. user, '-inf', b0)
out[2] = redis.call('ZCOUNT', p .. 'uc' .. '\0' .. user, '-inf', b0)
local v = redis.call('ZREVRANGEBYSCORE', p .. 'uv' .. '\0' .. user, b0, '-inf', 'LIMIT', 0, 1)
out[3] = v[1] or ''
local reads = redis.call('ZREVRANGEBYSCORE', p .. 'ur' .. '\0' .. user, b0, '-inf', 'LIMIT', 0, math.max(nTitles, nEmbs))
local titles, embs = {}, {}
for i, m in ipairs(reads) do
  local parts = {}
  for part in string.gmatch(m, '([^%z]+)') do parts[#parts + 1] = part end
  local ak = p .. 'a' .. '\0' .. parts[#parts - 1]
  if i <= nTitles then titles[i] = redis.call('HGET', ak, 'title') or '' end
  if i <= nEmbs then embs[i] = redis.call('HGET', ak, 'emb') or '' end
end
out[4] = titles
out[5] = embs
local counted = {} -- neighbour id -> its shows and clicks: candidates share neighbours
for i = 10, #ARGV do
  local art = ARGV[i]
  local a = redis.call('HMGET', p .. 'a' .. '\0' .. art, 'category', 'subcategory', 'title', 'word_count', 'publish_time', 'breaking', 'emb', 'nb')
  if not a[1] then
    out[#out + 1] = false
  else
    local as, ac = p .. 'as' .. '\0' .. art, p .. 'ac' .. '\0' .. art
    local emb, n, shows, clicks = '', 0, 0, 0
    if wantEmb then emb = a[7] or '' end
    if wantPrior and a[8] then
      for nb in string.gmatch(a[8], '([^%z]+)') do
        local c = counted[nb]
        if not c then
          c = {redis.call('ZCOUNT', p .. 'as' .. '\0' .. nb, '-inf', b0), redis.call('ZCOUNT', p .. 'ac' .. '\0' .. nb, '-inf', b0)}
          counted[nb] = c
        end
        n, shows, clicks = n + 1, shows + c[1], clicks + c[2]
      end
    end
    out[#out + 1] = {a[1], a[2], a[3], a[4], a[5], a[6],
      redis.call('ZCOUNT', as, '-inf', b0), redis.call('ZCOUNT', ac, '-inf', b0),
      redis.call('ZCOUNT', as, '-inf', b1), redis.call('ZCOUNT', ac, '-inf', b1),
      redis.call('ZCOUNT', as, '-inf', b2), redis.call('ZCOUNT', ac, '-inf', b2),
      redis.call('ZCOUNT', p .. 'ucs' .. '\0' .. user .. '\0' .. a[1], '-inf', b0),
      redis.call('ZCOUNT', p .. 'ucc' .. '\0' .. user .. '\0' .. a[1], '-inf', b0),
      redis.call('ZCOUNT', p .. 'uss' .. '\0' .. user .. '\0' .. a[2], '-inf', b0),
      redis.call('ZCOUNT', p .. 'usc' .. '\0' .. user .. '\0' .. a[2], '-inf', b0),
      emb, n, shows, clicks}
  end
end
return out
`)

// fillEntry is the length of a known candidate's answer from fillScript.
const fillEntry = 20

// Fill computes the features at cols of names for each candidate from one
// script call that reads the reader and every candidate inside Redis.
func (r *Redis) Fill(ctx context.Context, q Query, ids []string, names []string, cols []int, rows []float32) ([]string, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	needs := semanticNeedsOf(names, cols)
	dims := r.limits.EmbeddingDimensions
	windows := r.spec.windows(q.Time)
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	args := make([]any, 0, 9+len(ids))
	args = append(args, r.prefix, q.UserID, micros(windows[0]), micros(windows[1]), micros(windows[2]), r.spec.RecentReads,
		needs.reads(r.spec), flag(needs.recent || needs.longTerm), flag(needs.prior))
	for _, id := range ids {
		args = append(args, id)
	}
	raw, err := fillScript.Run(ctx, r.client, nil, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if len(raw) != 5+len(ids) {
		return nil, fmt.Errorf("redis: %d answers for %d candidates", len(raw), len(ids))
	}
	var reader readerFacts
	reader.shows, _ = raw[0].(int64)
	reader.clicks, _ = raw[1].(int64)
	if last, _ := raw[2].(string); last != "" {
		if reader.lastVisit, err = strconv.ParseInt(last, 10, 64); err != nil {
			return nil, fmt.Errorf("redis: visit %q: %w", last, err)
		}
		reader.visited = true
	}
	if titles, _ := raw[3].([]any); len(titles) > 0 {
		newestFirst := make([][]float32, len(titles))
		for i, t := range titles {
			title, _ := t.(string)
			newestFirst[i] = TitleVector(title, r.spec.TitleDimensions)
		}
		reader.profile = r.spec.profile(newestFirst)
	}
	if embs, _ := raw[4].([]any); len(embs) > 0 {
		newestFirst := make([][]int16, len(embs))
		for i, e := range embs {
			b, _ := e.(string)
			newestFirst[i] = unpackEmbedding(b, dims)
		}
		reader.recent, reader.longTerm = r.spec.profiles(needs, dims, newestFirst)
	}
	facts := make([]articleFacts, len(ids))
	articles := make([]Article, len(ids))
	for i, x := range raw[5:] {
		entry, ok := x.([]any)
		if !ok || len(entry) != fillEntry {
			continue // false: the catalog does not know the id
		}
		a, err := articleFrom(ids[i], entry[:6])
		if err != nil {
			return nil, err
		}
		articles[i] = a
		f := &facts[i]
		f.article, f.vector = &articles[i], TitleVector(a.Title, r.spec.TitleDimensions)
		n := make([]int64, 10)
		for k := range n {
			if n[k], ok = entry[6+k].(int64); !ok {
				return nil, fmt.Errorf("redis: article %q: count %d is %T", ids[i], k, entry[6+k])
			}
		}
		f.counts = [3][2]int64{{n[0], n[1]}, {n[2], n[3]}, {n[4], n[5]}}
		f.category, f.subcategory = [2]int64{n[6], n[7]}, [2]int64{n[8], n[9]}
		if b, _ := entry[16].(string); b != "" {
			articles[i].Quantised = unpackEmbedding(b, dims)
			f.sem = newEmbedded(&articles[i], "", dims)
		}
		neighbours, ok1 := entry[17].(int64)
		shows, ok2 := entry[18].(int64)
		clicks, ok3 := entry[19].(int64)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("redis: article %q: neighbour counts are %T %T %T", ids[i], entry[17], entry[18], entry[19])
		}
		f.neighbours, f.neighbourCounts = int(neighbours), [2]int64{shows, clicks}
	}
	return r.spec.fill(q, reader, ids, facts, names, cols, rows), nil
}

func articleFrom(id string, v []any) (Article, error) {
	text := make([]string, len(v))
	for i, x := range v {
		s, ok := x.(string)
		if !ok {
			return Article{}, fmt.Errorf("redis: article %q: field %d missing", id, i)
		}
		text[i] = s
	}
	words, err1 := strconv.ParseUint(text[3], 10, 32)
	published, err2 := strconv.ParseInt(text[4], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Article{}, fmt.Errorf("redis: article %q: %w", id, err)
	}
	return Article{ID: id, Category: text[0], Subcategory: text[1], Title: text[2], WordCount: uint32(words),
		PublishTime: published, Breaking: text[5] == "1"}, nil
}
