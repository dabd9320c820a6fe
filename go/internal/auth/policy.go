package auth

import (
	"strings"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	rankerv1 "ranker.internal/client/gen/ranker/v1"
)

// methodRoles is the one place that says which role each method needs. A
// method missing here is refused to every caller when authentication is on,
// and a test fails for every ranker.v1 method missing here.
var methodRoles = map[string]Role{
	rankerv1.RankingService_Rank_FullMethodName:           RoleRank,
	rankerv1.RankingService_UpsertArticles_FullMethodName: RoleIngest,
	rankerv1.RankingService_RecordEvents_FullMethodName:   RoleIngest,
	rankerv1.RankingService_GetModelInfo_FullMethodName:   RoleInfo,
	// Reflection describes the API: the same audience as model info.
	reflectionv1.ServerReflection_ServerReflectionInfo_FullMethodName:      RoleInfo,
	reflectionv1alpha.ServerReflection_ServerReflectionInfo_FullMethodName: RoleInfo,
}

// Health checks are open to all: kubelet probes and load balancers carry no
// token, and a serving status tells nothing worth hiding.
var publicServices = []string{healthpb.Health_ServiceDesc.ServiceName}

// RequiredRole is the role a method needs; public is true for methods
// anyone may call, ok false for a method no role grants.
func RequiredRole(fullMethod string) (role Role, public, ok bool) {
	for _, service := range publicServices {
		if strings.HasPrefix(fullMethod, "/"+service+"/") {
			return "", true, true
		}
	}
	role, ok = methodRoles[fullMethod]
	return role, false, ok
}
