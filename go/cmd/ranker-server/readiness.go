package main

import (
	"sync"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// readiness is the ranking service's health (what the readiness probe
// asks): SERVING while a model version serves, memory lets Rank be answered
// (overload.MemoryOptions.Serving) and the feature state has not lost its
// data (watchStateLoss), NOT_SERVING otherwise. Each is told by its own
// goroutine; any one alone turns it. After the health server's Shutdown
// its status stays NOT_SERVING whatever is told.
type readiness struct {
	mu         sync.Mutex
	health     *health.Server // nil until the server exists; set once
	modelReady bool
	memoryLow  bool // the heap lets Rank be served
	stateKept  bool // the feature state has its data
}

func newReadiness(modelReady bool) *readiness {
	return &readiness{modelReady: modelReady, memoryLow: true, stateKept: true}
}

// attach starts reporting to h.
func (r *readiness) attach(h *health.Server) { r.change(func() { r.health = h }) }

// model tells whether a model version serves.
func (r *readiness) model(ready bool) { r.change(func() { r.modelReady = ready }) }

// memory tells whether the heap lets Rank be served.
func (r *readiness) memory(ok bool) { r.change(func() { r.memoryLow = ok }) }

// state tells whether the feature state still has its data.
func (r *readiness) state(kept bool) { r.change(func() { r.stateKept = kept }) }

// change applies one input under the lock and publishes the status.
func (r *readiness) change(set func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set()
	r.publish()
}

func (r *readiness) publish() {
	if r.health == nil {
		return
	}
	serving := r.modelReady && r.memoryLow && r.stateKept
	status := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		status = healthpb.HealthCheckResponse_SERVING
	}
	r.health.SetServingStatus(rankerv1.RankingService_ServiceDesc.ServiceName, status)
}
