package xds

import (
	"errors"
	"slices"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	credinj "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	generic "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}
}

func tlsSocket(t *testing.T, names ...string) *core.TransportSocket {
	var sds []*tlsv3.SdsSecretConfig
	for _, n := range names {
		sds = append(sds, &tlsv3.SdsSecretConfig{Name: n, SdsConfig: adsSource()})
	}
	return &core.TransportSocket{Name: "tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: sds},
	})}}
}

func secret(name string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{}}}
}

func TestSecretRefs(t *testing.T) {
	injector := func(name string, src *core.ConfigSource) *listener.Listener {
		inj := &credinj.CredentialInjector{Credential: &core.TypedExtensionConfig{Name: "generic", TypedConfig: anyOf(t, &generic.Generic{
			Credential: &tlsv3.SdsSecretConfig{Name: name, SdsConfig: src},
		})}}
		h := &hcm.HttpConnectionManager{StatPrefix: "x", HttpFilters: []*hcm.HttpFilter{{Name: "inj", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: anyOf(t, inj)}}}}
		return &listener.Listener{Name: "l", FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: "hcm", ConfigType: &listener.Filter_TypedConfig{TypedConfig: anyOf(t, h)}}}}}}
	}
	for _, tc := range []struct {
		name    string
		res     proto.Message
		want    []string
		wantErr bool
	}{
		{"cluster transport socket", &cluster.Cluster{Name: "c", TransportSocket: tlsSocket(t, "default", "other")}, []string{"default", "other"}, false},
		{"credential injector nested in two Anys", injector("apikey", adsSource()), []string{"apikey"}, false},
		{"file-based SDS is not ours", injector("apikey", &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_PathConfigSource{PathConfigSource: &core.PathConfigSource{Path: "/x"}}}), nil, false},
		{"no references", &cluster.Cluster{Name: "c"}, nil, false},
		{"Any of an unknown type fails closed", &cluster.Cluster{Name: "c", TransportSocket: &core.TransportSocket{Name: "x", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}}}}, nil, true},
		{"garbage Any fails closed", &cluster.Cluster{Name: "c", TransportSocket: &core.TransportSocket{Name: "x", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", Value: []byte{0xff, 0xff}}}}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := secretRefs(tc.res)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBuildSnapshot(t *testing.T) {
	c := &cluster.Cluster{Name: "c", TransportSocket: tlsSocket(t, "default")}
	c2 := &cluster.Cluster{Name: "c2"}
	for _, tc := range []struct {
		name    string
		nr      *NodeResources
		wantErr error
	}{
		{"complete", &NodeResources{Clusters: []types.Resource{c}, Secrets: []types.Resource{secret("default")}}, nil},
		{"missing referenced secret", &NodeResources{Clusters: []types.Resource{c}}, ErrInconsistent},
		{"unreferenced secret is fine", &NodeResources{Clusters: []types.Resource{c2}, Secrets: []types.Resource{secret("x")}}, nil},
		{"resource of the wrong type", &NodeResources{Clusters: []types.Resource{secret("default")}}, errAny},
		{"duplicate names", &NodeResources{Clusters: []types.Resource{c2, c2}}, errAny},
		{"nameless resource", &NodeResources{Clusters: []types.Resource{&cluster.Cluster{}}}, errAny},
		{"nil resource", &NodeResources{Clusters: []types.Resource{nil}}, errAny},
		{"nil resources", nil, errAny},
		{"listener references an RDS route it lacks", &NodeResources{Listeners: []types.Resource{&listener.Listener{Name: "l", FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{Name: "hcm", ConfigType: &listener.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm.HttpConnectionManager{RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: "r"}}})}}}}}}}}, ErrInconsistent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := buildSnapshot(tc.nr, newRefCache(10))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case errors.Is(tc.wantErr, errAny) && err == nil, tc.wantErr != nil && !errors.Is(tc.wantErr, errAny) && !errors.Is(err, tc.wantErr):
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestContentVersion(t *testing.T) {
	a, b := secret("a"), secret("b")
	b2 := secret("b")
	b2.GetGenericSecret().Secret = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "new"}}
	v := func(items ...types.Resource) string {
		s, _, err := contentVersion(resource.SecretType, items)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if v(a, b) != v(b, a) {
		t.Error("version depends on order")
	}
	if v(a, b) == v(a, b2) {
		t.Error("different content, same version")
	}
	if v(a) == v(b) {
		t.Error("different names, same version")
	}
	// Two separate calls on the empty set: the version is deterministic
	// and differs from a non-empty set's.
	empty1, empty2 := v(), v()
	if empty1 == v(a) || empty1 != empty2 {
		t.Error("empty set version")
	}
}
