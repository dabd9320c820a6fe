package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
	"ranker/internal/metrics"
)

// rawCodec sends bytes as they are: how a broken or hostile client looks.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T", v)
	}
	return b, nil
}
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

func TestEveryOutcomeIsCountedEvenBeforeTheHandler(t *testing.T) {
	reg, _, _, logger := testModels(t)
	m := metrics.New()
	outcomes := m.Outcomes()
	// WaitForHandlers: Stop returns only once every handler, and its End event, is done.
	g := grpc.NewServer(grpc.StatsHandler(outcomes), grpc.MaxRecvMsgSize(64<<10), grpc.UnknownServiceHandler(UnknownMethod), grpc.WaitForHandlers(true))
	rankerv1.RegisterRankingServiceServer(g, New(reg, Options{Limits: testLimits, Metrics: m}, logger))
	outcomes.KnowMethods(g.GetServiceInfo())
	conn := serveInProcess(t, g)
	ctx := context.Background()

	var reply []byte
	for i := range 3 { // made-up methods share one series, however many a caller invents
		err := conn.Invoke(ctx, fmt.Sprintf("/ranker.v1.Made%d/Rank", i), []byte{}, &reply, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("made-up method: got %v, want Unimplemented", err)
		}
	}

	err := conn.Invoke(ctx, "/ranker.v1.RankingService/Rank", []byte{0xff, 0xff, 0xff, 0x07}, &reply, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) == codes.OK {
		t.Fatal("a message that does not decode was accepted")
	}
	decodeCode := status.Code(err).String()

	client := rankerv1.NewRankingServiceClient(conn)
	_, err = client.Rank(ctx, &rankerv1.RankRequest{UserId: strings.Repeat("u", 100<<10)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversize message: got %v, want ResourceExhausted", err)
	}
	_, err = client.Rank(ctx, &rankerv1.RankRequest{})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty request: got %v", err)
	}
	g.Stop() // End events are delivered before Stop returns

	for _, c := range []struct{ method, code string }{{"Rank", decodeCode}, {"Rank", "ResourceExhausted"}, {"Rank", "InvalidArgument"}, {"unknown", "Unimplemented"}} {
		if got := testutil.ToFloat64(outcomes.Counter().WithLabelValues(c.method, c.code)); got < 1 {
			t.Errorf("%s %s: counted %v times, want at least 1", c.method, c.code, got)
		}
	}
	if got := testutil.ToFloat64(outcomes.Undecodable().WithLabelValues("Rank")); got != 1 {
		t.Errorf("undecodable Rank requests counted %v times, want 1 (has gRPC's message changed?)", got)
	}
	if got := testutil.CollectAndCount(outcomes.Counter()); got != 4 {
		t.Errorf("%d series, want 4 (made-up method names must not add series)", got)
	}
}
