package kube

import (
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/policy"
)

func objMeta(name string, age int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: "ns", Generation: 1,
		CreationTimestamp: metav1.NewTime(time.Unix(1_700_000_000+int64(age), 0))}
}

// TestBuildBlame: without an API server, what build leaves out and what
// it says, by the object's own field paths.
func TestBuildBlame(t *testing.T) {
	base, err := config.Parse([]byte("trustDomain: mesh.local\nauthz:\n  plaintext: true\n"), fstest.MapFS{}, "base")
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Labels: map[string]string{"app": "x"}},
		Spec: corev1.PodSpec{ServiceAccountName: "sa"}}
	agent := func(name string, age int, peers ...string) *v1alpha1.MeshAgent {
		a := &v1alpha1.MeshAgent{ObjectMeta: objMeta(name, age), Spec: v1alpha1.MeshAgentSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}}, SharedSPIFFEID: true,
			InboundPort: 15001, App: "127.0.0.1:8080"}}
		for _, p := range peers {
			a.Spec.OutboundPort = 15003
			a.Spec.Peers = append(a.Spec.Peers, v1alpha1.Peer{Name: p, Addresses: []string{"10.0.0.1:15001"}})
		}
		return a
	}
	rule := func(name string, age int, rules ...v1alpha1.Rule) *v1alpha1.AuthorizationRule {
		return &v1alpha1.AuthorizationRule{ObjectMeta: objMeta(name, age), Spec: v1alpha1.AuthorizationRuleSpec{Rules: rules}}
	}
	tests := []struct {
		name     string
		objs     objects
		accepted []string
		refused  map[string]string // object -> a problem it must have
	}{
		{
			name: "the newer of two clashing rules is refused",
			objs: objects{rules: []*v1alpha1.AuthorizationRule{
				rule("a-new", 2, v1alpha1.Rule{Name: "r", Match: v1alpha1.Match{Path: "/x"}}),
				rule("z-old", 1, v1alpha1.Rule{Name: "r", Match: v1alpha1.Match{Path: "/y"}}),
			}},
			accepted: []string{"AuthorizationRule ns/z-old"},
			refused:  map[string]string{"AuthorizationRule ns/a-new": `spec.rules[0].name: rule "r" defined twice`},
		},
		{
			name: "an agent whose peer is refused goes too, naming the peer",
			objs: objects{pods: []*corev1.Pod{pod}, serviceAccounts: map[string]bool{"ns/sa": true},
				agents: []*v1alpha1.MeshAgent{agent("caller", 1, "callee"), agent("callee", 2, "nobody")}},
			refused: map[string]string{
				"MeshAgent ns/callee": `spec.peers[0].name: unknown agent "nobody"`,
				"MeshAgent ns/caller": `spec.peers[0].name: unknown agent "callee"`,
			},
		},
		{
			name:    "no ServiceAccount",
			objs:    objects{pods: []*corev1.Pod{pod}, agents: []*v1alpha1.MeshAgent{agent("a", 1)}},
			refused: map[string]string{"MeshAgent ns/a": "spec.serviceAccountName: ServiceAccount ns/sa not found"},
		},
		{
			name: "a schema that does not compile; the rule naming it goes too",
			objs: objects{
				schemas: []*v1alpha1.MessageSchema{{ObjectMeta: objMeta("s", 1), Spec: v1alpha1.MessageSchemaSpec{Schema: runtime.RawExtension{Raw: []byte(`{"type": 12}`)}}}},
				rules:   []*v1alpha1.AuthorizationRule{rule("r", 2, v1alpha1.Rule{Name: "r", Match: v1alpha1.Match{Path: "/x"}, Schema: "s"})},
			},
			refused: map[string]string{"MessageSchema ns/s": "spec.schema: ", "AuthorizationRule ns/r": `spec.rules[0].schema: unknown schema "s"`},
		},
	}
	opts := policy.Options{NewBodyChecker: policy.NewSchemaBodyChecker(base.Authz.Policy.Body)}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g, err := build(base, tc.objs, opts)
			if err != nil {
				t.Fatal(err)
			}
			for r, v := range g.verdicts {
				want, refuse := tc.refused[r.String()]
				got := strings.Join(v.problems, "\n")
				switch {
				case refuse && !strings.Contains(got, want):
					t.Errorf("%s: problems %q, want one with %q", r, got, want)
				case !refuse && got != "":
					t.Errorf("%s refused: %s", r, got)
				}
			}
			for _, a := range tc.accepted {
				found := false
				for r, v := range g.verdicts {
					found = found || (r.String() == a && len(v.problems) == 0)
				}
				if !found {
					t.Errorf("%s not accepted", a)
				}
			}
		})
	}
}
