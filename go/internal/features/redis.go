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

// fillScript reads everything one Rank needs in one call: ARGV prefix, user,
// t, t - short window, t - long window, recent reads, then candidate ids.
// It answers the reader's shows, clicks, last visit (or "") and recent
// reads (newest first, as stored members), then per candidate either
// false (unknown) or its catalog fields and counts.
var fillScript = redis.NewScript(`
local p, user = ARGV[1], ARGV[2]
local b0, b1, b2 = '(' .. ARGV[3], '(' .. ARGV[4], '(' .. ARGV[5]
local out = {}
out[1] = redis.call('ZCOUNT', p .. 'us' .. '\0' .. user, '-inf', b0)
out[2] = redis.call('ZCOUNT', p .. 'uc' .. '\0' .. user, '-inf', b0)
local v = redis.call('ZREVRANGEBYSCORE', p .. 'uv' .. '\0' .. user, b0, '-inf', 'LIMIT', 0, 1)
out[3] = v[1] or ''
local reads = redis.call('ZREVRANGEBYSCORE', p .. 'ur' .. '\0' .. user, b0, '-inf', 'LIMIT', 0, tonumber(ARGV[6]))
local titles = {}
for i, m in ipairs(reads) do
  local parts = {}
  for part in string.gmatch(m, '([^%z]+)') do parts[#parts + 1] = part end
  titles[i] = redis.call('HGET', p .. 'a' .. '\0' .. parts[#parts - 1], 'title') or ''
end
out[4] = titles
for i = 7, #ARGV do
  local art = ARGV[i]
  local a = redis.call('HMGET', p .. 'a' .. '\0' .. art, 'category', 'subcategory', 'title', 'word_count', 'publish_time', 'breaking')
  if not a[1] then
    out[#out + 1] = false
  else
    local as, ac = p .. 'as' .. '\0' .. art, p .. 'ac' .. '\0' .. art
    out[#out + 1] = {a[1], a[2], a[3], a[4], a[5], a[6],
      redis.call('ZCOUNT', as, '-inf', b0), redis.call('ZCOUNT', ac, '-inf', b0),
      redis.call('ZCOUNT', as, '-inf', b1), redis.call('ZCOUNT', ac, '-inf', b1),
      redis.call('ZCOUNT', as, '-inf', b2), redis.call('ZCOUNT', ac, '-inf', b2),
      redis.call('ZCOUNT', p .. 'ucs' .. '\0' .. user .. '\0' .. a[1], '-inf', b0),
      redis.call('ZCOUNT', p .. 'ucc' .. '\0' .. user .. '\0' .. a[1], '-inf', b0),
      redis.call('ZCOUNT', p .. 'uss' .. '\0' .. user .. '\0' .. a[2], '-inf', b0),
      redis.call('ZCOUNT', p .. 'usc' .. '\0' .. user .. '\0' .. a[2], '-inf', b0)}
  end
end
return out
`)

// Fill computes the features at cols of names for each candidate from one
// script call that reads the reader and every candidate inside Redis.
func (r *Redis) Fill(ctx context.Context, q Query, ids []string, names []string, cols []int, rows []float32) ([]string, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	windows := r.spec.windows(q.Time)
	args := make([]any, 0, 6+len(ids))
	args = append(args, r.prefix, q.UserID, micros(windows[0]), micros(windows[1]), micros(windows[2]), r.spec.RecentReads)
	for _, id := range ids {
		args = append(args, id)
	}
	raw, err := fillScript.Run(ctx, r.client, nil, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if len(raw) != 4+len(ids) {
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
	facts := make([]articleFacts, len(ids))
	articles := make([]Article, len(ids))
	for i, x := range raw[4:] {
		entry, ok := x.([]any)
		if !ok || len(entry) != 16 {
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
