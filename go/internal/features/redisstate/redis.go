// Package redisstate keeps the feature state in Redis, so that several
// server replicas rank from the same state (--state redis://...).
package redisstate

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"ranker/internal/features"
)

// Redis keeps the feature state in Redis, so that several server replicas
// rank from the same state. Every event is applied by one Lua script, which
// checks it against the state and updates every count atomically, so
// replicas recording at once cannot count an event twice. Counts are sorted
// sets scored by event time with one member per event: "events strictly
// before t" is ZCOUNT key -inf (t, the same answer the embedded state gives.
// Redis keeps the whole history (no pruning): size its memory for it.
type Redis struct {
	client     *redis.Client
	spec       *features.Spec
	limits     features.Limits
	prefix     string
	now        func() time.Time
	timeout    time.Duration
	durability Durability

	// The marker this server found or wrote at its first contact with
	// Redis (see attach); every call checks that Redis still holds it.
	attachMu sync.Mutex
	marker   atomic.Pointer[string]
}

var _ features.Service = (*Redis)(nil)

// Durability is what a Redis state requires of the server's persistence.
type Durability int

const (
	// RequireDurable refuses a Redis that does not append every write to
	// its AOF and fsync it before answering (appendonly yes, appendfsync
	// always): only then does an acknowledged batch survive Redis being
	// killed or its machine losing power.
	RequireDurable Durability = iota
	// AcceptVolatile takes any Redis (--state-redis-volatile): for tests
	// and development, where losing acknowledged events is acceptable.
	AcceptVolatile
)

// ErrStateLost is a Redis that no longer holds the state this server
// attached to: it restarted without its data, or was flushed. Serving from
// it would answer every reader cold and every candidate unknown.
var ErrStateLost = errors.New("redis lost the feature state")

// markerKey holds a random value written when a server first finds Redis
// without one: an empty Redis that once held it has lost its data.
const markerKey = "marker"

// Open connects to the Redis at url (redis://host:port/db); timeout
// bounds each call, so a Rank answers (with the state's features missing)
// when Redis does not. When Redis answers, Open checks its persistence
// (see Durability) and fails if it is not durable; when Redis is down, it
// does not fail: requests then report the state as unavailable, and the
// check runs at the first call Redis answers.
func Open(url string, spec *features.Spec, limits features.Limits, timeout time.Duration, durability Durability) (*Redis, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout, opts.PoolTimeout = timeout, timeout, timeout, timeout
	opts.MaxRetries = 1
	if err := limits.Check(); err != nil {
		return nil, err
	}
	r := &Redis{client: redis.NewClient(opts), spec: spec, limits: limits, prefix: "ranker:", now: time.Now, timeout: timeout, durability: durability}
	ctx, cancel := r.bounded(context.Background())
	defer cancel()
	if err := r.attach(ctx); errors.Is(err, errNotDurable) {
		_ = r.client.Close()
		return nil, err
	}
	return r, nil
}

var errNotDurable = errors.New("redis does not make writes durable before answering")

// attach, once per server, checks the persistence of Redis and finds or
// writes the marker. Until it succeeds every call tries it first.
func (r *Redis) attach(ctx context.Context) error {
	if r.marker.Load() != nil {
		return nil
	}
	r.attachMu.Lock()
	defer r.attachMu.Unlock()
	if r.marker.Load() != nil {
		return nil
	}
	if r.durability == RequireDurable {
		if err := r.checkDurable(ctx); err != nil {
			return err
		}
	}
	mine := strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatUint(rand.Uint64(), 36)
	if err := r.client.SetNX(ctx, r.key(markerKey), mine, 0).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	marker, err := r.client.Get(ctx, r.key(markerKey)).Result()
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	r.marker.Store(&marker)
	return nil
}

// checkDurable asks Redis for its persistence settings.
func (r *Redis) checkDurable(ctx context.Context) error {
	settings, err := r.client.ConfigGet(ctx, "append*").Result()
	if err != nil {
		if isNetworkError(err) {
			return fmt.Errorf("redis: %w", err)
		}
		return fmt.Errorf("state: %w: CONFIG GET appendonly, appendfsync failed (%w); a Redis that hides CONFIG cannot be checked: make sure it runs appendonly yes with appendfsync always, then pass --state-redis-volatile", errNotDurable, err)
	}
	if settings["appendonly"] != "yes" || settings["appendfsync"] != "always" {
		return fmt.Errorf("state: %w: appendonly %q, appendfsync %q; acknowledged events survive a Redis restart only with appendonly yes and appendfsync always (redis.conf, or CONFIG SET), or pass --state-redis-volatile for tests and development",
			errNotDurable, settings["appendonly"], settings["appendfsync"])
	}
	return nil
}

func isNetworkError(err error) bool {
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, context.DeadlineExceeded)
}

// checkMarker compares what Redis holds with the marker attached to.
func (r *Redis) checkMarker(held string, err error) error {
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis: %w", err)
	}
	if want := *r.marker.Load(); held != want {
		return fmt.Errorf("%w: key %s is %q, not %q as when this server attached (Redis restarted without its data, or was flushed); restore its data, or restart the servers to start from an empty state",
			ErrStateLost, r.key(markerKey), held, want)
	}
	return nil
}

// Lost reports ErrStateLost when Redis no longer holds the state this
// server attached to; nil otherwise, also when Redis does not answer (an
// outage, which each call reports on its own).
func (r *Redis) Lost(ctx context.Context) error {
	if r.marker.Load() == nil {
		return nil
	}
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	held, err := r.client.Get(ctx, r.key(markerKey)).Result()
	if err := r.checkMarker(held, err); errors.Is(err, ErrStateLost) {
		return err
	}
	return nil
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
// features.State.ApplyArticles). It reads the catalog, computes, and writes in one
// transaction that fails, and is tried again, if another replica changed
// the catalog meanwhile: every upsert bumps the key "catalog".
//
// Each Redis call is bounded by the client's timeouts, not the whole upsert:
// the neighbour search between the calls may take longer than one call may.
func (r *Redis) UpsertArticles(ctx context.Context, articles []features.Article) (features.Result, error) {
	if err := features.CheckArticleBatch(len(articles)); err != nil {
		return features.Result{}, err
	}
	if err := r.attach(ctx); err != nil {
		return features.Result{}, err
	}
	var res features.Result
	var batch []features.Article
	bounds := features.NewBounds(r.spec, r.limits, r.now())
	for i, a := range articles {
		if field, reason := features.CheckArticle(a, bounds); field != "" {
			res.Refuse(a.ID, fmt.Sprintf("articles[%d]", i), field, reason)
			continue
		}
		batch = append(batch, r.spec.Stored(a))
	}
	res.Accepted = len(batch)
	if len(batch) == 0 {
		return res, nil
	}
	const attempts = 20
	for range attempts {
		err := r.client.Watch(ctx, func(tx *redis.Tx) error {
			if err := r.checkMarker(tx.Get(ctx, r.key(markerKey)).Result()); err != nil {
				return err
			}
			return r.upsert(ctx, tx, batch)
		}, r.key("catalog"), r.key(markerKey))
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		if errors.Is(err, ErrStateLost) {
			return features.Result{}, err
		}
		if err != nil {
			return features.Result{}, fmt.Errorf("redis: %w", err)
		}
		return res, nil
	}
	return features.Result{}, fmt.Errorf("redis: the catalog changed under %d attempts in a row", attempts)
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
func (r *Redis) upsert(ctx context.Context, tx *redis.Tx, batch []features.Article) error {
	dims, window := r.limits.EmbeddingDimensions, r.spec.NeighbourWindow()
	pub := r.key("pub") // the articles with an embedding, scored by publish time
	// The batch as it will be stored: the last entry of each id.
	final := make(map[string]*features.Semantic, len(batch))
	for i := range batch {
		a := &batch[i]
		final[a.ID] = features.NewSemantic(a, features.ReadOrderKey(a.ID), dims)
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
		if err == nil && e != nil && int64(p) == e.PublishTime() && oldVector[id].Val() == string(packEmbedding(e.Quantised())) {
			// The same vector at the same time: no article's neighbours change.
			delete(final, id)
			continue
		}
		if err == nil {
			moved = append(moved, int64(p))
		}
		if e != nil {
			moved = append(moved, e.PublishTime())
		}
	}
	// Whose neighbours change: the batch's, and those published up to a
	// window after a time the batch moved.
	targets := map[string]bool{}
	for id := range final {
		targets[id] = true
	}
	for _, span := range features.Spans(moved, window) {
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
				need = append(need, e.PublishTime()-window)
			}
		} else if p, err := tx.ZScore(ctx, pub, id).Result(); err == nil {
			need = append(need, int64(p)-window)
		} else if !errors.Is(err, redis.Nil) {
			return err
		}
	}
	catalog, err := r.window(ctx, tx, features.Spans(need, window), final)
	if err != nil {
		return err
	}
	index := make(map[string]int, len(catalog))
	for i, e := range catalog {
		index[e.ID()] = i
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
		lo := sort.Search(len(catalog), func(i int) bool { return catalog[i].PublishTime() >= c.PublishTime()-window })
		hi := sort.Search(len(catalog), func(i int) bool { return catalog[i].PublishTime() >= c.PublishTime() })
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
					if k, ok := index[n]; ok && e != nil && n != id && e.PublishTime() >= c.PublishTime()-window && e.PublishTime() < c.PublishTime() {
						pool = append(pool, catalog[k])
					}
				}
			}
		}
		for _, j := range r.spec.Nearest(c, len(pool), func(k int) *features.Semantic { return pool[k] }) {
			lists[id] = append(lists[id], pool[j].ID())
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
				p.ZAdd(ctx, pub, redis.Z{Score: float64(e.PublishTime()), Member: id})
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
func (r *Redis) window(ctx context.Context, tx *redis.Tx, spans [][2]int64, final map[string]*features.Semantic) ([]*features.Semantic, error) {
	var out []*features.Semantic
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
			a := features.Article{ID: id, PublishTime: int64(m.Score), Quantised: unpackEmbedding(vectors[i].Val(), r.limits.EmbeddingDimensions)}
			if e := features.NewSemantic(&a, features.ReadOrderKey(id), r.limits.EmbeddingDimensions); e != nil {
				out = append(out, e)
			}
		}
	}
	for _, e := range final {
		if e != nil {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *features.Semantic) int { return cmp.Compare(a.PublishTime(), b.PublishTime()) })
	return out, nil
}

// The events' scripts: a prelude that reads what the checks need, the
// checks of the rules on the state in the order of features.ImpressionRules
// and features.ClickRules, each answering its rule's code (assembled by
// script), then the writes of an accepted event, answering "ok". Each event
// is one script, atomic, so replicas recording at once cannot count an
// event twice.

// eventClock is the start of both preludes: ARGV prefix, event id,
// request, user, article, time, lateness (µs), the watermark before the
// batch (empty for none). It reads the watermark (wm) and defines late(w, at):
// whether time at is more than the lateness before watermark w. An event id
// (key e, whose value is its event time) or an impression (hash i, field
// time) late against the watermark before the batch is absent to every
// rule, by the event clock, as in the embedded state (features/admit.go,
// which says why the batch's start). Their keys' wall-clock expiry (keyTTL)
// only collects garbage.
const eventClock = `
local p, id, req, user, art, t = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local wm = redis.call('GET', p .. 'wm')
local function late(w, at)
	return w and w ~= '' and tonumber(w) - tonumber(at) > tonumber(ARGV[7])
end
local function current(at) return not late(ARGV[8], at) end
local ek = p .. 'e' .. '\0' .. id
local seenAt = redis.call('GET', ek)
-- '1': an id recorded before its value held its time; it stays a duplicate until it expires.
local seen = seenAt and (seenAt == '1' or current(seenAt))
-- Key c marks a click's event id (kept as long as key e); an id without it
-- is an impression's.
local ck = p .. 'c' .. '\0' .. id
local seenClick = seen and redis.call('EXISTS', ck) == 1
local ik = p .. 'i' .. '\0' .. req .. '\0' .. art
local imp = redis.call('HMGET', ik, 'user', 'category', 'subcategory', 'time', 'clicked')
if imp[4] and not current(imp[4]) then imp = {} end
`

// keyTTL is how long, in wall-clock time, Redis keeps an event id or an
// impression. It only collects garbage: the event clock decides (see
// eventClock), so the keys must outlive their place within the lateness
// bound. Twice the lateness covers event time lagging the wall clock by up
// to the lateness (a quiet night, a backlog sent late).
func keyTTL(lateness time.Duration) time.Duration { return max(2*lateness, time.Millisecond) }

// impressionPrelude reads an impression's state: eventClock's ARGV, then
// ttl (ms).
const impressionPrelude = eventClock + `
local a = redis.call('HMGET', p .. 'a' .. '\0' .. art, 'category', 'subcategory')
`

// impressionChecks are the Lua halves of the impression rules on the state
// (the Go halves are in features/admit.go); CODE is the rule's code.
var impressionChecks = map[string]string{
	features.RuleIDOfOtherKind:  `if seenClick then return CODE end`,
	features.RuleDuplicate:      `if seen then return CODE end`,
	features.RuleUnknownArticle: `if not a[1] then return CODE end`,
	features.RuleLate:           `if late(wm, t) then return CODE end`,
	features.RuleShownTwice:     `if imp[1] then return CODE end`,
}

const impressionWrites = `
redis.call('SET', ek, t, 'PX', ARGV[9])
redis.call('HSET', ik, 'user', user, 'category', a[1], 'subcategory', a[2], 'time', t, 'clicked', '0')
redis.call('PEXPIRE', ik, ARGV[9])
redis.call('ZADD', p .. 'as' .. '\0' .. art, t, id)
redis.call('ZADD', p .. 'us' .. '\0' .. user, t, id)
redis.call('ZADD', p .. 'ucs' .. '\0' .. user .. '\0' .. a[1], t, id)
redis.call('ZADD', p .. 'uss' .. '\0' .. user .. '\0' .. a[2], t, id)
redis.call('ZADD', p .. 'uv' .. '\0' .. user, t, t)
redis.call('SADD', p .. 'users', user)
redis.call('INCR', p .. 'n')
if not wm or tonumber(t) > tonumber(wm) then redis.call('SET', p .. 'wm', t) end
return 'ok'
`

// clickPrelude reads a click's state: eventClock's ARGV, then ttl (ms),
// read-order key.
const clickPrelude = eventClock

// clickChecks are the Lua halves of the click rules on the state; the
// other reader's answer carries the reader the impression was shown to.
var clickChecks = map[string]string{
	features.RuleIDOfOtherKind:    `if seen and not seenClick then return CODE end`,
	features.RuleDuplicate:        `if seen then return CODE end`,
	features.RuleNoImpression:     `if not imp[1] then return CODE end`,
	features.RuleOtherReader:      `if imp[1] ~= user then return CODE .. ':' .. imp[1] end`,
	features.RuleClickedTwice:     `if imp[5] == '1' then return CODE end`,
	features.RuleBeforeImpression: `if tonumber(t) < tonumber(imp[4]) then return CODE end`,
}

// clickWrites count the click at its impression's time, as the training
// rows do.
const clickWrites = `
local at = imp[4]
redis.call('SET', ek, t, 'PX', ARGV[9])
redis.call('SET', ck, '1', 'PX', ARGV[9])
redis.call('HSET', ik, 'clicked', '1')
redis.call('ZADD', p .. 'ac' .. '\0' .. art, at, id)
redis.call('ZADD', p .. 'uc' .. '\0' .. user, at, id)
redis.call('ZADD', p .. 'ucc' .. '\0' .. user .. '\0' .. imp[2], at, id)
redis.call('ZADD', p .. 'usc' .. '\0' .. user .. '\0' .. imp[3], at, id)
redis.call('ZADD', p .. 'ur' .. '\0' .. user, at, ARGV[10] .. '\0' .. art .. '\0' .. id)
redis.call('INCR', p .. 'n')
if not wm or tonumber(t) > tonumber(wm) then redis.call('SET', p .. 'wm', t) end
return 'ok'
`

var (
	impressionScript = redis.NewScript(script("impression", impressionPrelude, features.ImpressionRules, impressionChecks, impressionWrites))
	clickScript      = redis.NewScript(script("click", clickPrelude, features.ClickRules, clickChecks, clickWrites))
)

// script assembles an event's script: the prelude, the checks of the rules
// on the state in the table's order, the writes. It panics, so the process
// does not start, when the checks do not cover exactly the table's rules on
// the state.
func script[T any](kind, prelude string, rules []features.Rule[T], checks map[string]string, writes string) string {
	if err := features.CoverageOf(rules, checks); err != nil {
		panic(fmt.Sprintf("redis %s script: %v", kind, err))
	}
	var b strings.Builder
	b.WriteString(prelude)
	for _, code := range features.StateRules(rules) {
		b.WriteString(strings.ReplaceAll(checks[code], "CODE", "'"+code+"'"))
		b.WriteString("\n")
	}
	b.WriteString(writes)
	return b.String()
}

// RecordEvents validates and records a batch, each event atomically, by
// the acceptance rules: those needing no state here, the others in the
// scripts.
func (r *Redis) RecordEvents(ctx context.Context, impressions []features.Impression, clicks []features.Click) (features.Result, error) {
	if err := features.CheckEventBatch(len(impressions), len(clicks)); err != nil {
		return features.Result{}, err
	}
	var res features.Result
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	if err := r.attach(ctx); err != nil {
		return features.Result{}, err
	}
	for _, s := range []*redis.Script{impressionScript, clickScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return features.Result{}, fmt.Errorf("redis: %w", err)
		}
	}
	bounds := features.NewBounds(r.spec, r.limits, r.now())
	ttl := strconv.FormatInt(keyTTL(r.limits.Lateness).Milliseconds(), 10)
	// The watermark before the batch, which recorded impressions and event
	// ids are judged against (see eventClock).
	// A Redis that lost the state takes no events: they would be counted
	// into an empty state, as if the lost ones had never been.
	held, err := r.client.MGet(ctx, r.key("wm"), r.key(markerKey)).Result()
	if err != nil {
		return features.Result{}, fmt.Errorf("redis: %w", err)
	}
	before, _ := held[0].(string)
	marker, _ := held[1].(string)
	if err := r.checkMarker(marker, nil); err != nil {
		return features.Result{}, err
	}
	pipe := r.client.Pipeline()
	// Each event's outcome, in the batch's order, so that the refusals are
	// listed in the order the embedded state lists them: a refusal by a
	// rule needing no state is known now, the others once the scripts ran.
	type outcome struct {
		cmd     *redis.Cmd // the script's answer; nil when refused before it
		refused func()     // lists that refusal
		// refuse refuses the event by the rule on the state with the code,
		// shown to the reader given (for other_reader), or counts a
		// duplicate.
		refuse func(code, shownTo string) error
	}
	var outcomes []outcome
	sent := 0
	for i, e := range impressions {
		at := func() string { return fmt.Sprintf("impressions[%d]", i) }
		refuse := func(code, shownTo string) error {
			return features.Refuse(&res, features.ImpressionRules, code, e, e.EventID, at(), bounds, shownTo)
		}
		if field, reason := features.CheckImpression(e, bounds); field != "" {
			outcomes = append(outcomes, outcome{refused: func() { res.Refuse(e.EventID, at(), field, reason) }})
			continue
		}
		cmd := impressionScript.EvalSha(ctx, pipe, nil, r.prefix, e.EventID, e.RequestID, e.UserID, e.ArticleID,
			micros(e.Time), r.limits.Lateness.Microseconds(), before, ttl)
		outcomes = append(outcomes, outcome{cmd: cmd, refuse: refuse})
		sent++
	}
	for i, e := range clicks {
		at := func() string { return fmt.Sprintf("clicks[%d]", i) }
		refuse := func(code, shownTo string) error {
			return features.Refuse(&res, features.ClickRules, code, e, e.EventID, at(), bounds, shownTo)
		}
		if field, reason := features.CheckClick(e, bounds); field != "" {
			outcomes = append(outcomes, outcome{refused: func() { res.Refuse(e.EventID, at(), field, reason) }})
			continue
		}
		cmd := clickScript.EvalSha(ctx, pipe, nil, r.prefix, e.EventID, e.RequestID, e.UserID, e.ArticleID,
			micros(e.Time), r.limits.Lateness.Microseconds(), before, ttl, features.ReadOrderKey(e.ArticleID))
		outcomes = append(outcomes, outcome{cmd: cmd, refuse: refuse})
		sent++
	}
	if sent > 0 {
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			// Some events of the batch may have been applied; a retry with the
			// same event ids counts each once.
			return features.Result{}, fmt.Errorf("redis: %w", err)
		}
	}
	for _, o := range outcomes {
		if o.cmd == nil {
			o.refused()
			continue
		}
		answer, err := o.cmd.Text()
		if err != nil {
			return features.Result{}, fmt.Errorf("redis: %w", err)
		}
		if answer == "ok" {
			res.Accepted++
			continue
		}
		code, shownTo, _ := strings.Cut(answer, ":") // codes hold no colon; reader ids may
		if err := o.refuse(code, shownTo); err != nil {
			return features.Result{}, fmt.Errorf("redis: unexpected answer %q: %w", answer, err)
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
// their neighbours' counts (1 or 0), the marker (see attach; an error
// STATELOST when Redis holds another), then candidate ids. It answers the
// reader's shows, clicks, last visit (or ""), the titles of the recent reads
// and the embeddings of the semantic reads (newest first; "" for none), then
// per candidate either false (unknown) or its catalog fields, counts,
// embedding ("" for none or not asked), and its neighbours' number, shows
// and clicks before t.
var fillScript = redis.NewScript(`
local p, user = ARGV[1], ARGV[2]
if redis.call('GET', p .. 'marker') ~= ARGV[10] then return redis.error_reply('STATELOST') end
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
for i = 11, #ARGV do
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
func (r *Redis) Fill(ctx context.Context, q features.Query, ids []string, names []string, cols []int, rows []float32) ([]string, error) {
	ctx, cancel := r.bounded(ctx)
	defer cancel()
	if err := r.attach(ctx); err != nil {
		return nil, err
	}
	needs := features.SemanticNeedsOf(names, cols)
	dims := r.limits.EmbeddingDimensions
	windows := r.spec.Windows(q.Time)
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	args := make([]any, 0, 10+len(ids))
	args = append(args, r.prefix, q.UserID, micros(windows[0]), micros(windows[1]), micros(windows[2]), r.spec.RecentReads,
		needs.Reads(r.spec), flag(needs.Recent || needs.LongTerm), flag(needs.Prior), *r.marker.Load())
	for _, id := range ids {
		args = append(args, id)
	}
	raw, err := fillScript.Run(ctx, r.client, nil, args...).Slice()
	if err != nil && strings.Contains(err.Error(), "STATELOST") {
		if lost := r.checkMarker(r.client.Get(ctx, r.key(markerKey)).Result()); lost != nil {
			return nil, lost
		}
	}
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	if len(raw) != 5+len(ids) {
		return nil, fmt.Errorf("redis: %d answers for %d candidates", len(raw), len(ids))
	}
	var reader features.ReaderFacts
	reader.Shows, _ = raw[0].(int64)
	reader.Clicks, _ = raw[1].(int64)
	if last, _ := raw[2].(string); last != "" {
		if reader.LastVisit, err = strconv.ParseInt(last, 10, 64); err != nil {
			return nil, fmt.Errorf("redis: visit %q: %w", last, err)
		}
		reader.Visited = true
	}
	if titles, _ := raw[3].([]any); len(titles) > 0 {
		newestFirst := make([][]float32, len(titles))
		for i, t := range titles {
			title, _ := t.(string)
			newestFirst[i] = features.TitleVector(title, r.spec.TitleDimensions)
		}
		reader.Profile = r.spec.TitleProfile(newestFirst)
	}
	if embs, _ := raw[4].([]any); len(embs) > 0 {
		newestFirst := make([][]int16, len(embs))
		for i, e := range embs {
			b, _ := e.(string)
			newestFirst[i] = unpackEmbedding(b, dims)
		}
		reader.Recent, reader.LongTerm = r.spec.SemanticProfiles(needs, dims, newestFirst)
	}
	facts := make([]features.ArticleFacts, len(ids))
	articles := make([]features.Article, len(ids))
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
		f.Article, f.Vector = &articles[i], features.TitleVector(a.Title, r.spec.TitleDimensions)
		n := make([]int64, 10)
		for k := range n {
			if n[k], ok = entry[6+k].(int64); !ok {
				return nil, fmt.Errorf("redis: article %q: count %d is %T", ids[i], k, entry[6+k])
			}
		}
		f.Counts = [3][2]int64{{n[0], n[1]}, {n[2], n[3]}, {n[4], n[5]}}
		f.Category, f.Subcategory = [2]int64{n[6], n[7]}, [2]int64{n[8], n[9]}
		if b, _ := entry[16].(string); b != "" {
			articles[i].Quantised = unpackEmbedding(b, dims)
			f.Sem = features.NewSemantic(&articles[i], "", dims)
		}
		neighbours, ok1 := entry[17].(int64)
		shows, ok2 := entry[18].(int64)
		clicks, ok3 := entry[19].(int64)
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("redis: article %q: neighbour counts are %T %T %T", ids[i], entry[17], entry[18], entry[19])
		}
		f.Neighbours, f.NeighbourCounts = int(neighbours), [2]int64{shows, clicks}
	}
	return r.spec.Compute(q, reader, ids, facts, names, cols, rows), nil
}

func articleFrom(id string, v []any) (features.Article, error) {
	text := make([]string, len(v))
	for i, x := range v {
		s, ok := x.(string)
		if !ok {
			return features.Article{}, fmt.Errorf("redis: article %q: field %d missing", id, i)
		}
		text[i] = s
	}
	words, err1 := strconv.ParseUint(text[3], 10, 32)
	published, err2 := strconv.ParseInt(text[4], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return features.Article{}, fmt.Errorf("redis: article %q: %w", id, err)
	}
	return features.Article{ID: id, Category: text[0], Subcategory: text[1], Title: text[2], WordCount: uint32(words),
		PublishTime: published, Breaking: text[5] == "1"}, nil
}
