package envoy

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// validator is what generated Envoy messages implement.
type validator interface{ ValidateAll() error }

// deepValidate runs ValidateAll on m and, since ValidateAll does not look
// inside Any fields, on every Any payload nested in it, recursively. Every
// Any must resolve to a registered type (an unknown extension would be
// NACKed by Envoy). visit sees every message on the way.
func deepValidate(where string, m proto.Message, visit func(proto.Message)) []error {
	var errs []error
	if v, ok := m.(validator); ok {
		if err := v.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %T: %w", where, m, err))
		}
	}
	walk(m.ProtoReflect(), func(msg protoreflect.Message) {
		if visit != nil {
			visit(msg.Interface())
		}
		a, ok := msg.Interface().(*anypb.Any)
		if !ok || a.GetTypeUrl() == "" {
			return
		}
		inner, err := a.UnmarshalNew()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: Any %s: %w", where, a.GetTypeUrl(), err))
			return
		}
		errs = append(errs, deepValidate(where+">"+a.GetTypeUrl(), inner, visit)...)
	})
	return errs
}

// mustValidate fails t for every problem deepValidate finds.
func mustValidate(t *testing.T, where string, m proto.Message, visit func(proto.Message)) {
	t.Helper()
	for _, err := range deepValidate(where, m, visit) {
		t.Error(err)
	}
}

// walk calls f on msg and every message nested in it (not inside Anys).
func walk(msg protoreflect.Message, f func(protoreflect.Message)) {
	f(msg)
	msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					walk(mv.Message(), f)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					walk(v.List().Get(i).Message(), f)
				}
			}
		case fd.Message() != nil:
			walk(v.Message(), f)
		}
		return true
	})
}

// checkNode validates every resource of one node deeply and checks the
// cross references: every SDS name is in SecretNames (and vice versa),
// every SDS reference is over ADS with initial_fetch_timeout 0 and the
// same bytes, every cluster named by a route, ext_authz or JWKS fetch
// exists, every route config named by a listener exists.
func checkNode(t *testing.T, node string, nr *NodeResources) {
	t.Helper()
	sds := map[string]bool{}
	var sdsBytes []byte
	usedClusters := map[string]bool{}
	usedRoutes := map[string]bool{}
	visit := func(m proto.Message) {
		switch x := m.(type) {
		case *tlsv3.SdsSecretConfig:
			sds[x.GetName()] = true
			src := x.GetSdsConfig()
			if src.GetAds() == nil || src.GetInitialFetchTimeout() == nil || src.GetInitialFetchTimeout().AsDuration() != 0 ||
				src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
				t.Errorf("%s: SDS %q: config source %v, want ADS v3 with initial_fetch_timeout 0", node, x.GetName(), src)
			}
			b, err := deterministic.Marshal(src)
			if err != nil {
				t.Fatal(err)
			}
			if sdsBytes != nil && string(b) != string(sdsBytes) {
				t.Errorf("%s: SDS %q: config source bytes differ from another reference", node, x.GetName())
			}
			sdsBytes = b
		}
		switch x := m.(type) {
		case *corev3.GrpcService_EnvoyGrpc:
			usedClusters[x.GetClusterName()] = true
		case *corev3.HttpUri:
			usedClusters[x.GetCluster()] = true
		case *routev3.RouteAction:
			usedClusters[x.GetCluster()] = true
		}
		if r, ok := m.(interface{ GetRouteConfigName() string }); ok && r.GetRouteConfigName() != "" {
			usedRoutes[r.GetRouteConfigName()] = true
		}
	}
	for _, l := range nr.Listeners {
		mustValidate(t, node+"/listener "+l.GetName(), l, visit)
	}
	for _, c := range nr.Clusters {
		mustValidate(t, node+"/cluster "+c.GetName(), c, visit)
	}
	for _, r := range nr.Routes {
		mustValidate(t, node+"/route "+r.GetName(), r, visit)
	}
	want := map[string]bool{}
	for _, s := range nr.SecretNames {
		want[s] = true
	}
	if fmt.Sprint(sortedKeys(sds)) != fmt.Sprint(sortedKeys(want)) {
		t.Errorf("%s: referenced SDS names %v, SecretNames %v", node, sortedKeys(sds), nr.SecretNames)
	}
	clusters := map[string]bool{}
	for _, c := range nr.Clusters {
		if clusters[c.GetName()] {
			t.Errorf("%s: cluster %q twice", node, c.GetName())
		}
		clusters[c.GetName()] = true
	}
	for c := range usedClusters {
		if !clusters[c] {
			t.Errorf("%s: cluster %q referenced but not defined", node, c)
		}
	}
	routes := map[string]bool{}
	for _, r := range nr.Routes {
		routes[r.GetName()] = true
	}
	for r := range usedRoutes {
		if !routes[r] {
			t.Errorf("%s: route %q referenced but not defined", node, r)
		}
	}
	if len(routes) != len(usedRoutes) {
		t.Errorf("%s: routes %v, referenced %v", node, sortedKeys(routes), sortedKeys(usedRoutes))
	}
}

func sortedKeys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}
