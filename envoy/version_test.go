package envoy

import (
	"errors"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
)

func envoyNode(agent string, major, minor, patch uint32) *corev3.Node {
	return &corev3.Node{Id: "planner", UserAgentName: agent, UserAgentVersionType: &corev3.Node_UserAgentBuildVersion{
		UserAgentBuildVersion: &corev3.BuildVersion{Version: &typev3.SemanticVersion{MajorNumber: major, MinorNumber: minor, Patch: patch}},
	}}
}

func TestCheckEnvoyVersion(t *testing.T) {
	min := MinEnvoyVersion
	tests := []struct {
		name string
		node *corev3.Node
		ok   bool
	}{
		{"the minimum", envoyNode("envoy", min[0], min[1], min[2]), true},
		{"a later patch", envoyNode("envoy", min[0], min[1], min[2]+1), true},
		{"a later minor", envoyNode("envoy", min[0], min[1]+1, 0), true},
		{"a later major", envoyNode("envoy", min[0]+1, 0, 0), true},
		{"an older minor", envoyNode("envoy", min[0], min[1]-1, 99), false},
		{"1.32, without header_value_prefix", envoyNode("envoy", 1, 32, 3), false},
		{"no version", &corev3.Node{Id: "planner", UserAgentName: "envoy"}, false},
		{"no user agent, no version", &corev3.Node{Id: "planner"}, false},
		{"another xDS client", &corev3.Node{Id: "planner", UserAgentName: "grpc-go"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckEnvoyVersion(tc.node)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrEnvoyTooOld) {
				t.Fatalf("got %v, want ErrEnvoyTooOld", err)
			}
		})
	}
}

// TestGeneratedFieldsNeedMinEnvoy: the credential's prefix, the field
// older Envoys drop silently, is really in what the translator sends.
func TestGeneratedFieldsNeedMinEnvoy(t *testing.T) {
	m := loadMesh(t, "testdata/in/credentials.yaml")
	nr, err := TranslateAgent(m, "researcher")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, l := range nr.Listeners {
		mustValidate(t, l.GetName(), l, func(msg proto.Message) {
			if g, ok := msg.(interface{ GetHeaderValuePrefix() string }); ok && g.GetHeaderValuePrefix() != "" {
				found = true
			}
		})
	}
	if !found {
		t.Error("no header_value_prefix in the researcher's listeners; MinEnvoyVersion's reason is stale")
	}
}
