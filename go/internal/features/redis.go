package features

import (
	"context"
	"errors"
	"fmt"
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
	return &Redis{client: redis.NewClient(opts), spec: spec, limits: limits, prefix: "ranker:", now: time.Now, timeout: timeout}, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.client.Close() }

func (r *Redis) key(parts ...string) string { return r.prefix + strings.Join(parts, "\x00") }

func micros(t int64) string { return strconv.FormatInt(t, 10) }

func (r *Redis) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// UpsertArticles validates and stores catalog entries.
func (r *Redis) UpsertArticles(ctx context.Context, articles []Article) (Result, error) {
	var res Result
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	pipe := r.client.TxPipeline()
	for i, a := range articles {
		if field, reason := checkArticle(a); field != "" {
			res.rejecter(a.ID, fmt.Sprintf("articles[%d]", i))(field, reason)
			continue
		}
		breaking := "0"
		if a.Breaking {
			breaking = "1"
		}
		pipe.HSet(ctx, r.key("a", a.ID), "category", a.Category, "subcategory", a.Subcategory, "title", a.Title,
			"word_count", a.WordCount, "publish_time", micros(a.PublishTime), "breaking", breaking)
		pipe.SAdd(ctx, r.key("articles"), a.ID)
		res.Accepted++
	}
	if res.Accepted > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return Result{}, fmt.Errorf("redis: %w", err)
		}
	}
	return res, nil
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

// Counts reports articles, readers and events recorded (0 when Redis does
// not answer).
func (r *Redis) Counts() (articles, readers, events int) {
	ctx, cancel := r.bounded(context.Background())
	defer cancel()
	pipe := r.client.Pipeline()
	a := pipe.SCard(ctx, r.key("articles"))
	u := pipe.SCard(ctx, r.key("users"))
	n := pipe.Get(ctx, r.key("n"))
	_, _ = pipe.Exec(ctx) // each result below carries its own error
	events, _ = n.Int()
	return int(a.Val()), int(u.Val()), events
}

// Fill computes the features at cols of names for each candidate, in two
// round trips: the reader and the catalog entries, then the counts.
func (r *Redis) Fill(ctx context.Context, q Query, ids []string, names []string, cols []int, rows []float32) ([]string, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	before := "(" + micros(q.Time)
	pipe := r.client.Pipeline()
	userShows := pipe.ZCount(ctx, r.key("us", q.UserID), "-inf", before)
	userClicks := pipe.ZCount(ctx, r.key("uc", q.UserID), "-inf", before)
	visit := pipe.ZRevRangeByScoreWithScores(ctx, r.key("uv", q.UserID), &redis.ZRangeBy{Max: before, Min: "-inf", Count: 1})
	reads := pipe.ZRevRangeByScore(ctx, r.key("ur", q.UserID), &redis.ZRangeBy{Max: before, Min: "-inf", Count: int64(r.spec.RecentReads)})
	entries := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		entries[i] = pipe.HMGet(ctx, r.key("a", id), "category", "subcategory", "title", "word_count", "publish_time", "breaking")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis: %w", err)
	}
	var reader readerFacts
	reader.shows, reader.clicks = userShows.Val(), userClicks.Val()
	if v := visit.Val(); len(v) > 0 {
		reader.lastVisit, reader.visited = int64(v[0].Score), true
	}
	facts := make([]articleFacts, len(ids))
	articles := make([]Article, len(ids))
	for i, e := range entries {
		v := e.Val()
		if v[0] == nil {
			continue
		}
		a, err := articleFrom(ids[i], v)
		if err != nil {
			return nil, err
		}
		articles[i] = a
		facts[i].article = &articles[i]
		facts[i].vector = TitleVector(a.Title, r.spec.TitleDimensions)
	}

	pipe = r.client.Pipeline()
	var readTitles []*redis.StringCmd
	for _, m := range reads.Val() { // newest first
		parts := strings.SplitN(m, "\x00", 4)
		if len(parts) < 3 {
			return nil, fmt.Errorf("redis: malformed read %q", m)
		}
		article := parts[len(parts)-2]
		readTitles = append(readTitles, pipe.HGet(ctx, r.key("a", article), "title"))
	}
	windows := r.spec.windows(q.Time)
	type counts struct{ shows, clicks [3]*redis.IntCmd }
	articleCounts := make([]counts, len(ids))
	taste := make([][4]*redis.IntCmd, len(ids))
	for i := range ids {
		a := facts[i].article
		if a == nil {
			continue
		}
		for w, t := range windows {
			b := "(" + micros(t)
			articleCounts[i].shows[w] = pipe.ZCount(ctx, r.key("as", a.ID), "-inf", b)
			articleCounts[i].clicks[w] = pipe.ZCount(ctx, r.key("ac", a.ID), "-inf", b)
		}
		taste[i] = [4]*redis.IntCmd{
			pipe.ZCount(ctx, r.key("ucs", q.UserID, a.Category), "-inf", before),
			pipe.ZCount(ctx, r.key("ucc", q.UserID, a.Category), "-inf", before),
			pipe.ZCount(ctx, r.key("uss", q.UserID, a.Subcategory), "-inf", before),
			pipe.ZCount(ctx, r.key("usc", q.UserID, a.Subcategory), "-inf", before),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if len(readTitles) > 0 {
		var newestFirst [][]float32
		for _, t := range readTitles {
			newestFirst = append(newestFirst, TitleVector(t.Val(), r.spec.TitleDimensions))
		}
		reader.profile = r.spec.profile(newestFirst)
	}
	for i := range ids {
		if facts[i].article == nil {
			continue
		}
		for w := range windows {
			facts[i].counts[w] = [2]int64{articleCounts[i].shows[w].Val(), articleCounts[i].clicks[w].Val()}
		}
		facts[i].category = [2]int64{taste[i][0].Val(), taste[i][1].Val()}
		facts[i].subcategory = [2]int64{taste[i][2].Val(), taste[i][3].Val()}
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
