// Package client calls the ranking server (ranker.v1.RankingService) from a
// backend service: one connection with TLS or mutual TLS, a bearer token,
// a default deadline, retries of the calls that are safe to repeat, and
// errors that carry the server's structured details (see Error).
//
// The generated messages and stubs are in ranker.internal/client/gen/ranker/v1;
// this package adds what every caller would otherwise write again:
//
//	c, err := client.New("ranker.news.svc:50051", client.WithTLS(client.TLS{}), client.WithToken(token))
//	...
//	resp, err := c.Rank(ctx, client.ByIDs("reader-17", "a1", "a2", "a3"))
//	if e, ok := client.AsError(err); ok && e.Code == codes.InvalidArgument {
//		for _, v := range e.Violations { ... v.Field, v.Description ... }
//	}
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// DefaultTimeout bounds a call whose context has no deadline, retries
// included: a ranking that comes later than this is no use to a page.
const DefaultTimeout = 2 * time.Second

// DefaultRetry retries a refused connection (UNAVAILABLE: a restarting pod,
// a dropped connection) three times within a few hundred milliseconds.
var DefaultRetry = RetryPolicy{MaxAttempts: 4, InitialBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond, Multiplier: 2}

// RetryPolicy is how often and how fast a call refused with UNAVAILABLE is
// tried again. gRPC applies it, with jitter on each backoff, and only to
// the calls that are safe to repeat:
//   - Rank and GetModelInfo change nothing on the server;
//   - RecordEvents carries an event_id on every event, and the server
//     records each id once, so a batch retried after a lost answer is
//     counted once (the repeat is reported as duplicates).
//
// UpsertArticles is not retried: it replaces an article by id with no
// version, so a retry that lands after another writer's newer upsert of the
// same article would put the older one back. A single catalog writer can
// retry it itself.
type RetryPolicy struct {
	// MaxAttempts counts the first try; 1 disables retries. gRPC caps it at 5.
	MaxAttempts int
	// InitialBackoff is the mean wait before the first retry, multiplied by
	// Multiplier for each further one, up to MaxBackoff.
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// retriedMethods are the methods the retry policy applies to (see RetryPolicy).
var retriedMethods = []string{"Rank", "GetModelInfo", "RecordEvents"}

func (p RetryPolicy) validate() error {
	switch {
	case p.MaxAttempts < 1 || p.MaxAttempts > 5:
		return fmt.Errorf("retry: MaxAttempts %d, want 1 to 5 (gRPC's cap)", p.MaxAttempts)
	case p.MaxAttempts > 1 && (p.InitialBackoff <= 0 || p.MaxBackoff < p.InitialBackoff):
		return fmt.Errorf("retry: InitialBackoff %v and MaxBackoff %v, want 0 < InitialBackoff <= MaxBackoff", p.InitialBackoff, p.MaxBackoff)
	case p.MaxAttempts > 1 && (!(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 0)):
		return fmt.Errorf("retry: Multiplier %v, want a finite number of at least 1", p.Multiplier)
	}
	return nil
}

// serviceConfig is the gRPC service config that carries the retry policy.
func (p RetryPolicy) serviceConfig() string {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	type retryPolicy struct {
		MaxAttempts          int      `json:"maxAttempts"`
		InitialBackoff       string   `json:"initialBackoff"`
		MaxBackoff           string   `json:"maxBackoff"`
		BackoffMultiplier    float64  `json:"backoffMultiplier"`
		RetryableStatusCodes []string `json:"retryableStatusCodes"`
	}
	type methodConfig struct {
		Name        []name       `json:"name"`
		RetryPolicy *retryPolicy `json:"retryPolicy,omitempty"`
	}
	seconds := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s" }
	mc := methodConfig{}
	for _, m := range retriedMethods {
		mc.Name = append(mc.Name, name{Service: rankerv1.RankingService_ServiceDesc.ServiceName, Method: m})
	}
	if p.MaxAttempts > 1 {
		mc.RetryPolicy = &retryPolicy{MaxAttempts: p.MaxAttempts, InitialBackoff: seconds(p.InitialBackoff),
			MaxBackoff: seconds(p.MaxBackoff), BackoffMultiplier: p.Multiplier, RetryableStatusCodes: []string{"UNAVAILABLE"}}
	}
	b, err := json.Marshal(map[string]any{"methodConfig": []methodConfig{mc}})
	if err != nil {
		panic(err) // plain structs of strings and numbers always marshal
	}
	return string(b)
}

// TLS is how to reach a server that speaks TLS, each PEM as bytes (LoadTLS
// reads files). The zero value verifies the server against the system's
// roots.
type TLS struct {
	// RootCAs verify the server's certificate; empty uses the system's roots.
	RootCAs []byte
	// Certificate and Key are the client's, presented for mutual TLS
	// (the server's --tls-client-ca); both or neither.
	Certificate, Key []byte
	// ServerName is the name expected in the server's certificate when it
	// differs from the target's host (connecting by IP, a port-forward).
	ServerName string
}

// LoadTLS reads the PEM files of a TLS; an empty path leaves that part out.
func LoadTLS(rootCAs, certificate, key string) (TLS, error) {
	var t TLS
	for _, f := range []struct {
		path string
		into *[]byte
	}{{rootCAs, &t.RootCAs}, {certificate, &t.Certificate}, {key, &t.Key}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path)
		if err != nil {
			return TLS{}, fmt.Errorf("tls: %w", err)
		}
		*f.into = b
	}
	return t, nil
}

func (t TLS) config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if len(t.RootCAs) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.RootCAs) {
			return nil, errors.New("tls: RootCAs: no PEM certificate found")
		}
		c.RootCAs = pool
	}
	if (len(t.Certificate) == 0) != (len(t.Key) == 0) {
		return nil, errors.New("tls: Certificate and Key go together (mutual TLS needs both)")
	}
	if len(t.Certificate) > 0 {
		pair, err := tls.X509KeyPair(t.Certificate, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: Certificate and Key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

type options struct {
	tls     *tls.Config
	tlsErr  error
	token   string
	timeout time.Duration
	retry   RetryPolicy
	dial    []grpc.DialOption
}

// Option configures New.
type Option func(*options)

// WithTLS makes the connection speak TLS, mutual TLS when t carries a
// client certificate. Without it the connection is plaintext, for a
// development server on this machine.
func WithTLS(t TLS) Option {
	return func(o *options) { o.tls, o.tlsErr = t.config() }
}

// WithTLSConfig speaks TLS with a crypto/tls configuration of the caller's,
// for example one whose GetClientCertificate follows a rotating certificate.
func WithTLSConfig(c *tls.Config) Option {
	return func(o *options) { o.tls, o.tlsErr = c, nil }
}

// WithToken sends "authorization: Bearer <token>" on every call, the
// credential the server's --auth-tokens file lists by its SHA-256. New
// refuses a token over plaintext to anything but loopback, where it would
// travel in clear.
func WithToken(token string) Option {
	return func(o *options) { o.token = token }
}

// WithTimeout sets the deadline of a call whose context has none (0: no
// deadline). The default is DefaultTimeout.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithRetry replaces DefaultRetry; RetryPolicy{MaxAttempts: 1} disables retries.
func WithRetry(p RetryPolicy) Option {
	return func(o *options) { o.retry = p }
}

// WithDialOptions adds gRPC dial options (interceptors, stats handlers for
// tracing, keepalive), applied after the client's own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dial = append(o.dial, opts...) }
}

// Client is a connection to the ranking server, safe for concurrent use;
// make one per target and share it. The connection is made on the first
// call and re-made after a failure.
type Client struct {
	conn *grpc.ClientConn
	rpc  rankerv1.RankingServiceClient
}

// New makes a client for target ("host:port", or any gRPC target such as
// "dns:///ranker.news.svc:50051"). It does not connect yet, so it fails only
// on bad options.
func New(target string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout, retry: DefaultRetry}
	for _, opt := range opts {
		opt(&o)
	}
	if o.tlsErr != nil {
		return nil, o.tlsErr
	}
	if err := o.retry.validate(); err != nil {
		return nil, err
	}
	if o.timeout < 0 {
		return nil, fmt.Errorf("timeout: %v, want 0 (none) or more", o.timeout)
	}
	dial := []grpc.DialOption{
		// The client's retry policy, not one a DNS record could supply.
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultServiceConfig(o.retry.serviceConfig()),
	}
	if o.tls != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(o.tls)))
	} else {
		dial = append(dial, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.token != "" {
		if strings.ContainsAny(o.token, " \t\r\n") {
			return nil, errors.New("token: contains white space; pass the token alone, without \"Bearer\"")
		}
		if o.tls == nil && !isLoopback(target) {
			return nil, fmt.Errorf("token: to %s needs WithTLS (it would travel in clear)", target)
		}
		dial = append(dial, grpc.WithPerRPCCredentials(bearer{token: o.token, requireTLS: o.tls != nil}))
	}
	if o.timeout > 0 {
		dial = append(dial, grpc.WithChainUnaryInterceptor(defaultDeadline(o.timeout)))
	}
	conn, err := grpc.NewClient(target, append(dial, o.dial...)...)
	if err != nil {
		return nil, fmt.Errorf("ranker client for %s: %w", target, err)
	}
	return &Client{conn: conn, rpc: rankerv1.NewRankingServiceClient(conn)}, nil
}

// Close closes the connection; calls in flight fail with Canceled.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, for the gRPC health service or stubs
// of other services on the same server.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Rank scores the request's candidates and returns them best first. Build
// the request with ByIDs or ByFeatures, or fill a rankerv1.RankRequest.
func (c *Client) Rank(ctx context.Context, req *rankerv1.RankRequest, opts ...grpc.CallOption) (*rankerv1.RankResponse, error) {
	resp, err := c.rpc.Rank(ctx, req, opts...)
	return resp, fromCall(err)
}

// ModelInfo describes the serving version of a model; "" is the server's
// default model.
func (c *Client) ModelInfo(ctx context.Context, model string, opts ...grpc.CallOption) (*rankerv1.GetModelInfoResponse, error) {
	resp, err := c.rpc.GetModelInfo(ctx, &rankerv1.GetModelInfoRequest{ModelName: model}, opts...)
	return resp, fromCall(err)
}

// RecordEvents records impressions and clicks; every event needs a unique
// event_id, which makes the call safe to retry.
func (c *Client) RecordEvents(ctx context.Context, req *rankerv1.RecordEventsRequest, opts ...grpc.CallOption) (*rankerv1.RecordEventsResponse, error) {
	resp, err := c.rpc.RecordEvents(ctx, req, opts...)
	return resp, fromCall(err)
}

// UpsertArticles adds or replaces catalog entries; it is never retried (see
// RetryPolicy).
func (c *Client) UpsertArticles(ctx context.Context, req *rankerv1.UpsertArticlesRequest, opts ...grpc.CallOption) (*rankerv1.UpsertArticlesResponse, error) {
	resp, err := c.rpc.UpsertArticles(ctx, req, opts...)
	return resp, fromCall(err)
}

// defaultDeadline gives a call whose context has no deadline one of d.
func defaultDeadline(d time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// bearer is the per-call "authorization: Bearer <token>" metadata.
type bearer struct {
	token      string
	requireTLS bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.requireTLS }

// isLoopback reports whether a target (host:port, optionally dns:///)
// stays on this machine.
func isLoopback(target string) bool {
	target = strings.TrimPrefix(strings.TrimPrefix(target, "dns:///"), "passthrough:///")
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		host = target
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
