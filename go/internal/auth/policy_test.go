package auth

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "ranker.internal/client/gen/ranker/v1" // registers the ranker.v1 descriptors walked below
)

// Every method of every service in proto/ranker/v1 needs a role: a new RPC
// added without one fails here rather than being refused to everyone.
func TestEveryRankerMethodHasARole(t *testing.T) {
	methods := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("ranker.v1", func(file protoreflect.FileDescriptor) bool {
		for i := range file.Services().Len() {
			service := file.Services().Get(i)
			for j := range service.Methods().Len() {
				full := "/" + string(service.FullName()) + "/" + string(service.Methods().Get(j).Name())
				methods++
				if role, public, ok := RequiredRole(full); !ok || public || role == "" {
					t.Errorf("%s: got role %q public %v known %v, want a role", full, role, public, ok)
				}
			}
		}
		return true
	})
	if methods < 4 {
		t.Fatalf("walked %d ranker.v1 methods, want at least the 4 of RankingService", methods)
	}
}

func TestRequiredRole(t *testing.T) {
	tests := []struct {
		method     string
		wantRole   Role
		wantPublic bool
		wantOK     bool
	}{
		{"/ranker.v1.RankingService/Rank", RoleRank, false, true},
		{"/ranker.v1.RankingService/RecordEvents", RoleIngest, false, true},
		{"/ranker.v1.RankingService/UpsertArticles", RoleIngest, false, true},
		{"/ranker.v1.RankingService/GetModelInfo", RoleInfo, false, true},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", RoleInfo, false, true},
		{"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", RoleInfo, false, true},
		{"/grpc.health.v1.Health/Check", "", true, true},
		{"/grpc.health.v1.Health/Watch", "", true, true},
		{"/grpc.health.v1.HealthX/Check", "", false, false},
		{"/ranker.v1.RankingService/Unknown", "", false, false},
	}
	for _, tt := range tests {
		role, public, ok := RequiredRole(tt.method)
		if role != tt.wantRole || public != tt.wantPublic || ok != tt.wantOK {
			t.Errorf("%s: got %q %v %v, want %q %v %v", tt.method, role, public, ok, tt.wantRole, tt.wantPublic, tt.wantOK)
		}
	}
}
