package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Options say which files secure the server; empty names turn a part off.
type Options struct {
	CertFile     string // PEM certificate chain; with KeyFile, the server speaks TLS
	KeyFile      string // PEM private key
	ClientCAFile string // PEM CA bundle; client certificates are then required and verified
	TokensFile   string // callers and their roles (see ParseTokens); authorization is then on
	// CheckEvery bounds how often the files are looked at for changes;
	// zero means DefaultCheckEvery.
	CheckEvery time.Duration
	Logger     *slog.Logger
	// Refused, if set, is told of every call refused, with the method's
	// last path element and a reason (no_credentials, unknown_token,
	// unknown_certificate, missing_role, no_role_grants_method).
	Refused func(method, reason string)
}

// Server is the security of one gRPC server: its transport credentials and
// the interceptors that authorize each call.
type Server struct {
	tls     *tls.Config
	tokens  *reloader[*Tokens]
	logger  *slog.Logger
	refused func(method, reason string)
}

// New reads every file once; an error names the file (and line) at fault.
func New(o Options) (*Server, error) {
	if o.CheckEvery <= 0 {
		o.CheckEvery = DefaultCheckEvery
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Server{logger: o.Logger, refused: o.Refused}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, fmt.Errorf("tls-cert %q and tls-key %q: set both or neither", o.CertFile, o.KeyFile)
	}
	if o.ClientCAFile != "" && o.CertFile == "" {
		return nil, fmt.Errorf("tls-client-ca %s: needs --tls-cert and --tls-key (mutual TLS is TLS first)", o.ClientCAFile)
	}
	if o.CertFile != "" {
		pair, err := newReloader("tls key pair", []string{o.CertFile, o.KeyFile}, o.CheckEvery, o.Logger,
			func() (*tls.Certificate, error) { return loadKeyPair(o.CertFile, o.KeyFile, time.Now()) })
		if err != nil {
			return nil, err
		}
		var clientCAs *reloader[*x509.CertPool]
		if o.ClientCAFile != "" {
			clientCAs, err = newReloader("tls client CA", []string{o.ClientCAFile}, o.CheckEvery, o.Logger,
				func() (*x509.CertPool, error) { return loadCAPool(o.ClientCAFile) })
			if err != nil {
				return nil, err
			}
		}
		s.tls = serverTLS(pair, clientCAs)
	}
	if o.TokensFile != "" {
		tokens, err := newReloader("auth tokens", []string{o.TokensFile}, o.CheckEvery, o.Logger,
			func() (*Tokens, error) { return LoadTokens(o.TokensFile) })
		if err != nil {
			return nil, err
		}
		s.tokens = tokens
	}
	return s, nil
}

// Credentials is the server option for TLS, or one that changes nothing
// when the server speaks plaintext.
func (s *Server) Credentials() grpc.ServerOption {
	if s.tls == nil {
		return grpc.EmptyServerOption{}
	}
	return grpc.Creds(credentials.NewTLS(s.tls))
}

// Tap authorizes each call from its headers before gRPC creates its stream
// (a tap.ServerInHandle), so that it runs before the server's bound on
// calls in flight: a caller without valid credentials is refused at once
// and holds nothing, not even a place among the --max-inflight calls (a
// check in an interceptor runs only once a unary request has fully
// arrived, so half-open streams held that place unauthenticated). The
// headers' metadata and the connection's peer (its verified certificate,
// under mutual TLS) are in ctx already.
func (s *Server) Tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if err := s.authorize(ctx, info.FullMethodName); err != nil {
		return nil, err
	}
	return ctx, nil
}

// authorize admits a call to fullMethod or returns its refusal:
// UNAUTHENTICATED when the caller is not known, PERMISSION_DENIED when it
// lacks the method's role. The token is never quoted back.
func (s *Server) authorize(ctx context.Context, fullMethod string) error {
	role, public, ok := RequiredRole(fullMethod)
	if public || s.tokens == nil {
		// Without a tokens file there is no authorization: anyone who
		// connects (with a verified certificate, under mutual TLS) may call.
		return nil
	}
	if !ok {
		return s.refuse(ctx, fullMethod, "no_role_grants_method", codes.PermissionDenied,
			fmt.Sprintf("method %s is granted to no role", fullMethod))
	}
	caller, reason, err := s.identify(ctx)
	if err != nil {
		return s.refuse(ctx, fullMethod, reason, codes.Unauthenticated, err.Error())
	}
	if !caller.Has(role) {
		return s.refuse(ctx, fullMethod, "missing_role", codes.PermissionDenied,
			fmt.Sprintf("method %s needs role %q; caller %q has %v", fullMethod, role, caller.Name, caller.Roles))
	}
	return nil
}

// identify finds the caller by its bearer token or, when it sends none, by
// its verified client certificate.
func (s *Server) identify(ctx context.Context) (caller *Caller, reason string, err error) {
	tokens := s.tokens.Get()
	md, _ := metadata.FromIncomingContext(ctx)
	if values := md.Get("authorization"); len(values) > 0 {
		scheme, token, found := strings.Cut(values[0], " ")
		if len(values) > 1 || !found || !strings.EqualFold(scheme, "bearer") {
			return nil, "unknown_token", fmt.Errorf("authorization metadata: want one value, \"Bearer <token>\"")
		}
		// The token is every byte after "Bearer ", compared as sent: one
		// with a space around it is not the token it resembles (a
		// credential is never "corrected" into a match).
		if token == "" || strings.TrimSpace(token) != token {
			return nil, "unknown_token", fmt.Errorf("authorization metadata: bearer token empty or with leading or trailing whitespace; want exactly \"Bearer <token>\"")
		}
		if c, ok := tokens.ByToken(token); ok {
			return c, "", nil
		}
		return nil, "unknown_token", fmt.Errorf("bearer token not recognized")
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			ids := certificateIdentities(info.State.VerifiedChains[0][0])
			if c, ok := tokens.ByCertificate(ids); ok {
				return c, "", nil
			}
			return nil, "unknown_certificate", fmt.Errorf("client certificate %s is listed for no caller; send metadata \"authorization: Bearer <token>\"", truncate(strings.Join(ids, ", ")))
		}
	}
	return nil, "no_credentials", fmt.Errorf("no credentials: send metadata \"authorization: Bearer <token>\"")
}

// ErrorDomain names this service in google.rpc.ErrorInfo details, those of
// refused calls and of the ranking service's own errors.
const ErrorDomain = "ranker.v1"

func (s *Server) refuse(ctx context.Context, fullMethod, reason string, code codes.Code, message string) error {
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	if s.refused != nil {
		s.refused(method, reason)
	}
	addr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		addr = p.Addr.String()
	}
	// Debug, not warn: anyone can knock, and the counter is the alert.
	s.logger.Debug("call refused", "method", fullMethod, "reason", reason, "peer", addr, "message", message)
	// The reason in a word, so a client tells a missing token from a
	// missing role without parsing the message.
	st := status.New(code, message)
	if detailed, err := st.WithDetails(&errdetails.ErrorInfo{Reason: strings.ToUpper(reason), Domain: ErrorDomain,
		Metadata: map[string]string{"method": method}}); err == nil {
		return detailed.Err()
	}
	return st.Err()
}
