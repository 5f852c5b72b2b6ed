package kube_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
)

// TestSourceAPIServerOutage: while kube-apiserver is down the last
// generation keeps being served; when it is back the informers resume and
// a change made meanwhile is picked up.
func TestSourceAPIServerOutage(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	src := newSource(t, c.rc)
	gens := generations(t, ctx, src)
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("a", "default", v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "first", Match: v1alpha1.Match{Path: "/a"}}}}))
	next(t, ctx, gens, "rule first", func(c *config.Config) bool { return ruleNames(c) == "first" })

	c.srv.StopAPIServer()
	time.Sleep(2 * time.Second) // the watches notice
	if g, err := src.Load(); err != nil || ruleNames(g) != "first" {
		t.Fatalf("while the API server is down: %q %v, want the last generation", ruleNames(g), err)
	}
	c.srv.StartAPIServer()
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("b", "default", v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "second", Match: v1alpha1.Match{Path: "/b"}}}}))
	next(t, ctx, gens, "rules first,second after the restart", func(c *config.Config) bool { return ruleNames(c) == "first,second" })
}

// TestTwoSourcesAgree: two replicas watching one API server build the
// same generation from the same objects, the condition every replica's
// identical xDS versions rest on.
func TestTwoSourcesAgree(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.core.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "sa"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "a", "c"} {
		c.create(t, ctx, kube.MeshAgents, agentObj(n, "default", v1alpha1.MeshAgentSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": n}}, ServiceAccountName: "sa",
			SharedSPIFFEID: true, InboundPort: 15001, App: "127.0.0.1:8080"}))
		c.create(t, ctx, kube.AuthorizationRules, ruleObj("r-"+n, "default", v1alpha1.AuthorizationRuleSpec{
			Rules: []v1alpha1.Rule{{Name: "rule-" + n, Match: v1alpha1.Match{PathPrefix: "/" + n}}}}))
	}
	var got []*config.Config
	for range 2 {
		src := newSource(t, c.rc)
		if err := src.Start(ctx); err != nil {
			t.Fatal(err)
		}
		g, err := src.Load()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, g)
	}
	if len(got[0].Agents) != 3 || sortedRuleNames(got[0]) != "rule-a,rule-b,rule-c" {
		t.Fatalf("generation: %d agents, rules %q", len(got[0].Agents), ruleNames(got[0]))
	}
	if !reflect.DeepEqual(got[0].Agents, got[1].Agents) || !reflect.DeepEqual(got[0].Authz.Policy, got[1].Authz.Policy) {
		t.Error("two sources on one API server built different generations")
	}
}
