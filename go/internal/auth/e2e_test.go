package auth_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/auth"
)

// echoRanking answers every call it is let through, so a test sees exactly
// what the interceptors decided.
type echoRanking struct {
	rankerv1.UnimplementedRankingServiceServer
}

func (echoRanking) Rank(_ context.Context, r *rankerv1.RankRequest) (*rankerv1.RankResponse, error) {
	return &rankerv1.RankResponse{RequestId: r.GetRequestId()}, nil
}

func (echoRanking) GetModelInfo(context.Context, *rankerv1.GetModelInfoRequest) (*rankerv1.GetModelInfoResponse, error) {
	return &rankerv1.GetModelInfoResponse{ModelName: "m"}, nil
}

func (echoRanking) RecordEvents(context.Context, *rankerv1.RecordEventsRequest) (*rankerv1.RecordEventsResponse, error) {
	return &rankerv1.RecordEventsResponse{}, nil
}

// refusals records what Options.Refused is told.
type refusals struct {
	mu     sync.Mutex
	counts map[string]int
}

func (r *refusals) add(method, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[method+" "+reason]++
}

func (r *refusals) get(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[key]
}

// serve starts a real gRPC server on a loopback port, secured by o.
func serve(t *testing.T, o auth.Options, withReflection bool) string {
	t.Helper()
	o.CheckEvery = time.Nanosecond // every handshake and call looks at the files
	o.Logger = slog.New(slog.DiscardHandler)
	security, err := auth.New(o)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(security.Credentials(),
		grpc.InTapHandle(security.Tap))
	rankerv1.RegisterRankingServiceServer(s, echoRanking{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	if withReflection {
		reflection.Register(s)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// clientTLS trusts roots and, when given, presents cert.
func clientTLS(roots []byte, cert *leaf) credentials.TransportCredentials {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(roots)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c.Certificates = []tls.Certificate{cert.pair}
	}
	return credentials.NewTLS(c)
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func rank(conn *grpc.ClientConn, token string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := rankerv1.NewRankingServiceClient(conn).Rank(withToken(ctx, token), &rankerv1.RankRequest{RequestId: "r"})
	return err
}

func healthCheck(conn *grpc.ClientConn, p *peer.Peer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(p))
	return err
}

func listServices(conn *grpc.ClientConn, token string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(withToken(ctx, token))
	if err != nil {
		return nil, err
	}
	// A stream the server already refused makes Send return io.EOF; the
	// refusal itself comes from Recv.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	reply, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range reply.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

type pki struct {
	dir                            string
	ca, otherCA                    *testCA
	server, backend, ops, expired  leaf
	strangerFromOtherCA            leaf
	certFile, keyFile, caFile, tok string
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir(), ca: newCA(t, "ranker test CA"), otherCA: newCA(t, "someone else's CA")}
	p.server = p.ca.issue(t, leafOptions{commonName: "ranker", server: true})
	p.backend = p.ca.issue(t, leafOptions{commonName: "backend-client"})
	p.ops = p.ca.issue(t, leafOptions{commonName: "ops-laptop", uri: "spiffe://test/ops"})
	p.expired = p.ca.issue(t, leafOptions{commonName: "backend-client", expired: true})
	p.strangerFromOtherCA = p.otherCA.issue(t, leafOptions{commonName: "backend-client"})
	p.certFile, p.keyFile = filepath.Join(p.dir, "tls.crt"), filepath.Join(p.dir, "tls.key")
	p.caFile, p.tok = filepath.Join(p.dir, "ca.crt"), filepath.Join(p.dir, "tokens")
	writeFile(t, p.certFile, p.server.certPEM)
	writeFile(t, p.keyFile, p.server.keyPEM)
	writeFile(t, p.caFile, p.ca.pem)
	return p
}

func TestTLSRefusesPlaintextAndServesTLS(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, auth.Options{CertFile: p.certFile, KeyFile: p.keyFile}, false)
	if err := healthCheck(dial(t, addr, insecure.NewCredentials()), nil); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client: got %v, want Unavailable", err)
	}
	if err := healthCheck(dial(t, addr, clientTLS(p.otherCA.pem, nil)), nil); status.Code(err) != codes.Unavailable {
		t.Errorf("client trusting another CA: got %v, want Unavailable", err)
	}
	if err := rank(dial(t, addr, clientTLS(p.ca.pem, nil)), ""); err != nil {
		t.Errorf("TLS client: got %v, want OK (no tokens file: no authorization)", err)
	}
}

func TestMutualTLSAcceptsOnlyCertificatesFromTheClientCA(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, auth.Options{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile}, false)
	tests := []struct {
		name string
		cert *leaf
		want codes.Code
	}{
		{"no certificate", nil, codes.Unavailable},
		{"certificate from another CA", &p.strangerFromOtherCA, codes.Unavailable},
		{"expired certificate", &p.expired, codes.Unavailable},
		{"certificate from the client CA", &p.backend, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := rank(dial(t, addr, clientTLS(p.ca.pem, tt.cert)), ""); status.Code(err) != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestTokensAndCertificatesAuthorizeByRole(t *testing.T) {
	p := newPKI(t)
	writeFile(t, p.tok, []byte(strings.Join([]string{
		"backend rank " + auth.HashToken("backend-token"),
		"catalog ingest " + auth.HashToken("catalog-token"),
		"ops     info   cert:spiffe://test/ops",
	}, "\n")))
	refused := &refusals{counts: map[string]int{}}
	addr := serve(t, auth.Options{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile,
		TokensFile: p.tok, Refused: refused.add}, true)
	backendConn := dial(t, addr, clientTLS(p.ca.pem, &p.backend))
	opsConn := dial(t, addr, clientTLS(p.ca.pem, &p.ops))

	call := func(conn *grpc.ClientConn, method, token string) error {
		ctx, cancel := context.WithTimeout(withToken(context.Background(), token), 5*time.Second)
		defer cancel()
		client := rankerv1.NewRankingServiceClient(conn)
		var err error
		switch method {
		case "Rank":
			_, err = client.Rank(ctx, &rankerv1.RankRequest{})
		case "RecordEvents":
			_, err = client.RecordEvents(ctx, &rankerv1.RecordEventsRequest{})
		case "GetModelInfo":
			_, err = client.GetModelInfo(ctx, &rankerv1.GetModelInfoRequest{})
		case "Check":
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		case "ServerReflectionInfo":
			_, err = listServices(conn, token)
		}
		return err
	}
	tests := []struct {
		name        string
		conn        *grpc.ClientConn
		method      string
		token       string
		want        codes.Code
		wantMessage string
		wantReason  string
	}{
		{"certificate listed for no caller, no token", backendConn, "Rank", "", codes.Unauthenticated, "listed for no caller", "unknown_certificate"},
		{"wrong token", backendConn, "Rank", "guess", codes.Unauthenticated, "bearer token not recognized", "unknown_token"},
		{"right token, wrong role", backendConn, "Rank", "catalog-token", codes.PermissionDenied,
			`method /ranker.v1.RankingService/Rank needs role "rank"; caller "catalog"`, "missing_role"},
		{"right token", backendConn, "Rank", "backend-token", codes.OK, "", ""},
		// A credential is compared as sent, never trimmed into a match.
		{"right token with a trailing space", backendConn, "Rank", "backend-token ", codes.Unauthenticated, "leading or trailing whitespace", "unknown_token"},
		{"right token with a leading space", backendConn, "Rank", " backend-token", codes.Unauthenticated, "leading or trailing whitespace", "unknown_token"},
		{"ingest token records events", backendConn, "RecordEvents", "catalog-token", codes.OK, "", ""},
		{"rank token cannot record events", backendConn, "RecordEvents", "backend-token", codes.PermissionDenied, `needs role "ingest"`, "missing_role"},
		{"rank token cannot read model info", backendConn, "GetModelInfo", "backend-token", codes.PermissionDenied, `needs role "info"`, "missing_role"},
		{"certificate identity reads model info", opsConn, "GetModelInfo", "", codes.OK, "", ""},
		{"certificate identity without the rank role", opsConn, "Rank", "", codes.PermissionDenied, `caller "ops" has [info]`, "missing_role"},
		{"a token wins over the certificate", opsConn, "GetModelInfo", "guess", codes.Unauthenticated, "bearer token not recognized", "unknown_token"},
		{"health without credentials", backendConn, "Check", "", codes.OK, "", ""},
		{"reflection needs the info role", backendConn, "ServerReflectionInfo", "backend-token", codes.PermissionDenied, `needs role "info"`, "missing_role"},
		{"reflection for info", opsConn, "ServerReflectionInfo", "", codes.OK, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := tt.method + " " + tt.wantReason
			before := refused.get(key)
			err := call(tt.conn, tt.method, tt.token)
			if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.wantMessage) {
				t.Errorf("got %v, want %v with %q", err, tt.want, tt.wantMessage)
			}
			if tt.token != "" && strings.Contains(status.Convert(err).Message(), tt.token) {
				t.Errorf("refusal %q quotes the token", err)
			}
			if tt.wantReason != "" {
				if got := refused.get(key) - before; got != 1 {
					t.Errorf("refusals %q: got %d more, want 1", key, got)
				}
				// The reason is a detail too, so a client tells a missing
				// token from a missing role without parsing the message.
				var reasons []string
				for _, d := range status.Convert(err).Details() {
					if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == auth.ErrorDomain {
						reasons = append(reasons, info.GetReason())
					}
				}
				if want := strings.ToUpper(tt.wantReason); len(reasons) != 1 || reasons[0] != want {
					t.Errorf("got ErrorInfo reasons %v, want %s", reasons, want)
				}
			}
		})
	}

	// The tokens file is reloaded: a new caller is known without a restart.
	writeFile(t, p.tok, []byte("newcomer rank "+auth.HashToken("new-token")+"\n"))
	if err := rank(backendConn, "new-token"); err != nil {
		t.Errorf("token added to the file: got %v, want OK", err)
	}
	if err := rank(backendConn, "backend-token"); status.Code(err) != codes.Unauthenticated {
		t.Errorf("token removed from the file: got %v, want Unauthenticated", err)
	}
}

func TestPlaintextLoopbackWithTokensAsksForCredentials(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, []byte("backend rank "+auth.HashToken("backend-token")+"\n"))
	addr := serve(t, auth.Options{TokensFile: tokens}, false)
	conn := dial(t, addr, insecure.NewCredentials())
	if err := rank(conn, ""); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "authorization: Bearer <token>") {
		t.Errorf("no token: got %v, want Unauthenticated saying how to authenticate", err)
	}
	if err := rank(conn, "backend-token"); err != nil {
		t.Errorf("token: got %v, want OK", err)
	}
}

func TestReflectionOnlyWhenRegistered(t *testing.T) {
	conn := dial(t, serve(t, auth.Options{}, false), insecure.NewCredentials())
	if _, err := listServices(conn, ""); status.Code(err) != codes.Unimplemented {
		t.Errorf("without reflection: got %v, want Unimplemented", err)
	}
	conn = dial(t, serve(t, auth.Options{}, true), insecure.NewCredentials())
	names, err := listServices(conn, "")
	if err != nil || !strings.Contains(strings.Join(names, " "), "ranker.v1.RankingService") {
		t.Errorf("with reflection: got %v %v, want ranker.v1.RankingService listed", names, err)
	}
}

// TestRotationWithoutRestart replaces the certificate, key and client CA
// files under a running server: new connections see the new ones, and a
// broken replacement leaves the last good pair serving.
func TestRotationWithoutRestart(t *testing.T) {
	p := newPKI(t)
	addr := serve(t, auth.Options{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: p.caFile}, false)
	servedCN := func(client *leaf, roots []byte) (string, error) {
		var got peer.Peer
		if err := healthCheck(dial(t, addr, clientTLS(roots, client)), &got); err != nil {
			return "", err
		}
		return got.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].Subject.CommonName, nil
	}
	if cn, err := servedCN(&p.backend, p.ca.pem); cn != "ranker" || err != nil {
		t.Fatalf("before rotation: got %q %v, want ranker", cn, err)
	}

	rotated := p.ca.issue(t, leafOptions{commonName: "ranker-rotated", server: true})
	writeFile(t, p.certFile, rotated.certPEM)
	writeFile(t, p.keyFile, rotated.keyPEM)
	if cn, err := servedCN(&p.backend, p.ca.pem); cn != "ranker-rotated" || err != nil {
		t.Errorf("after rotation: got %q %v, want ranker-rotated", cn, err)
	}

	// A certificate without its key (a half-done copy) is refused; the
	// rotated pair keeps serving.
	writeFile(t, p.certFile, p.ca.issue(t, leafOptions{commonName: "mismatched", server: true}).certPEM)
	if cn, err := servedCN(&p.backend, p.ca.pem); cn != "ranker-rotated" || err != nil {
		t.Errorf("after a bad pair: got %q %v, want ranker-rotated", cn, err)
	}

	// The client CA rotates too: the new CA's clients get in, the old one's
	// no longer do.
	newCA := newCA(t, "next CA")
	writeFile(t, p.caFile, newCA.pem)
	newClient := newCA.issue(t, leafOptions{commonName: "backend-client"})
	if _, err := servedCN(&newClient, p.ca.pem); err != nil {
		t.Errorf("client of the new CA: got %v, want OK", err)
	}
	if _, err := servedCN(&p.backend, p.ca.pem); status.Code(err) != codes.Unavailable {
		t.Errorf("client of the old CA: got %v, want Unavailable", err)
	}
}

func TestBadFilesAtStartAreNamed(t *testing.T) {
	p := newPKI(t)
	garbage := filepath.Join(p.dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM"))
	expiredCert, expiredKey := filepath.Join(p.dir, "expired.crt"), filepath.Join(p.dir, "expired.key")
	writeFile(t, expiredCert, p.expired.certPEM)
	writeFile(t, expiredKey, p.expired.keyPEM)
	keyAsCA := filepath.Join(p.dir, "key-as-ca.pem")
	writeFile(t, keyAsCA, p.server.keyPEM)
	tests := []struct {
		name string
		o    auth.Options
		want string
	}{
		{"missing key", auth.Options{CertFile: p.certFile}, "set both or neither"},
		{"client CA without TLS", auth.Options{ClientCAFile: p.caFile}, "tls-client-ca " + p.caFile + ": needs --tls-cert"},
		{"cert not PEM", auth.Options{CertFile: garbage, KeyFile: p.keyFile}, "tls-cert " + garbage},
		{"key of another cert", auth.Options{CertFile: p.certFile, KeyFile: expiredKey}, "private key does not match"},
		{"expired", auth.Options{CertFile: expiredCert, KeyFile: expiredKey}, "tls-cert " + expiredCert + ": valid from"},
		{"missing cert file", auth.Options{CertFile: p.certFile + ".gone", KeyFile: p.keyFile}, p.certFile + ".gone"},
		{"CA not PEM", auth.Options{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: garbage}, "tls-client-ca " + garbage + ": no PEM certificate"},
		{"CA file holds a key", auth.Options{CertFile: p.certFile, KeyFile: p.keyFile, ClientCAFile: keyAsCA}, `PEM block 1 is "PRIVATE KEY"`},
		{"tokens file missing", auth.Options{TokensFile: p.tok}, p.tok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.New(tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
