package kube_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/policy"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's process-wide workers, started on first use.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreTopFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
	)
}

const baseYAML = `trustDomain: mesh.local
authz:
  plaintext: true
`

// crdFiles are the committed CRDs.
func crdFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "..", "examples", "kubernetes", "crds", "*.yaml"))
	if err != nil || len(files) != 3 {
		t.Fatalf("CRDs: %v %v", files, err)
	}
	return files
}

type cluster struct {
	srv  *kubetest.Server
	rc   *rest.Config
	dyn  dynamic.Interface
	core kubernetes.Interface
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	srv := kubetest.Start(t)
	rc := srv.Config(kubetest.Admin)
	kubetest.InstallCRDs(t, rc, crdFiles(t)...)
	return &cluster{srv: srv, rc: rc, dyn: dynamic.NewForConfigOrDie(rc), core: kubernetes.NewForConfigOrDie(rc)}
}

func (c *cluster) create(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource, obj runtime.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	if _, err := c.dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s %s: %v", gvr.Resource, u.GetName(), err)
	}
}

// update fetches the object, lets edit change its spec and writes it,
// again on a conflict (the source writes status beside its builds, as
// any controller does: a client's read-modify-write may meet one).
func (c *cluster) update(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource, ns, name string, edit func(spec map[string]any)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		u, err := c.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		spec, _ := u.Object["spec"].(map[string]any)
		edit(spec)
		_, err = c.dyn.Resource(gvr).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update %s %s: %v", gvr.Resource, name, err)
	}
}

func (c *cluster) accepted(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource, ns, name string) *metav1.Condition {
	t.Helper()
	u, err := c.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var st v1alpha1.Status
	if m, ok := u.Object["status"].(map[string]any); ok {
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st); err != nil {
			t.Fatal(err)
		}
	}
	cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
	if cond != nil && cond.ObservedGeneration != u.GetGeneration() {
		return nil // not yet for this generation
	}
	return cond
}

func (c *cluster) waitCondition(t *testing.T, ctx context.Context, gvr schema.GroupVersionResource, ns, name string, status metav1.ConditionStatus) *metav1.Condition {
	t.Helper()
	for {
		if cond := c.accepted(t, ctx, gvr, ns, name); cond != nil && cond.Status == status {
			return cond
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s %s/%s never got Accepted=%s", gvr.Resource, ns, name, status)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func newSource(t *testing.T, rc *rest.Config, opts ...kube.Option) *kube.Source {
	t.Helper()
	base, err := config.Parse([]byte(baseYAML), fstest.MapFS{}, "base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src, err := kube.New(rc, base, policy.Options{NewBodyChecker: policy.NewSchemaBodyChecker(base.Authz.Policy.Body)},
		append([]kube.Option{kube.WithDebounce(20 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// generations runs src and sends each new generation (or error).
func generations(t *testing.T, ctx context.Context, src *kube.Source) <-chan *config.Config {
	t.Helper()
	if err := src.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *config.Config, 16)
	first, err := src.Load()
	if err != nil {
		t.Fatal(err)
	}
	ch <- first
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(ctx, func(context.Context) {
			c, err := src.Load()
			if err != nil {
				t.Errorf("Load after a change: %v", err)
				return
			}
			ch <- c
		})
	}()
	t.Cleanup(func() { <-done })
	return ch
}

// next waits for a generation that ok accepts.
func next(t *testing.T, ctx context.Context, ch <-chan *config.Config, what string, ok func(*config.Config) bool) *config.Config {
	t.Helper()
	for {
		select {
		case c := <-ch:
			if ok(c) {
				return c
			}
		case <-ctx.Done():
			t.Fatalf("no generation with %s", what)
		}
	}
}

func agentObj(name, ns string, spec v1alpha1.MeshAgentSpec) *v1alpha1.MeshAgent {
	return &v1alpha1.MeshAgent{TypeMeta: metav1.TypeMeta{APIVersion: "meshward.dev/v1alpha1", Kind: "MeshAgent"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
}

func ruleObj(name, ns string, spec v1alpha1.AuthorizationRuleSpec) *v1alpha1.AuthorizationRule {
	return &v1alpha1.AuthorizationRule{TypeMeta: metav1.TypeMeta{APIVersion: "meshward.dev/v1alpha1", Kind: "AuthorizationRule"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: spec}
}

// sortedRuleNames is ruleNames in name order (objects created within
// one second of each other are merged in name order, others oldest first).
func sortedRuleNames(c *config.Config) string {
	n := strings.Split(ruleNames(c), ",")
	slices.Sort(n)
	return strings.Join(n, ",")
}

func ruleNames(c *config.Config) string {
	var n []string
	for _, r := range c.Authz.Policy.Rules {
		n = append(n, r.Name)
	}
	return strings.Join(n, ",")
}

// TestSourceAgentsAndRules: MeshAgents take their SPIFFE ID from their
// pods' ServiceAccount; AuthorizationRules become the policy; create,
// update and delete each make a new generation; an invalid object gets
// Accepted=False with its field path and changes nothing.
func TestSourceAgentsAndRules(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const ns = "default"
	if _, err := c.core.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "planner-sa"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "planner-0", Labels: map[string]string{"app": "planner"}},
		Spec: corev1.PodSpec{ServiceAccountName: "planner-sa", AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/planner"}}}}
	if _, err := c.core.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	src := newSource(t, c.rc)
	gens := generations(t, ctx, src)
	first := next(t, ctx, gens, "the empty cluster", func(*config.Config) bool { return true })
	if len(first.Agents) != 0 || len(first.Authz.Policy.Rules) != 0 {
		t.Fatalf("empty cluster: %d agents, %d rules", len(first.Agents), len(first.Authz.Policy.Rules))
	}

	// Create: an agent selecting the pod, and a rule.
	c.create(t, ctx, kube.MeshAgents, agentObj("planner", ns, v1alpha1.MeshAgentSpec{
		Selector:    metav1.LabelSelector{MatchLabels: map[string]string{"app": "planner"}},
		InboundPort: 15001, App: "127.0.0.1:8080",
	}))
	g := next(t, ctx, gens, "agent planner", func(c *config.Config) bool { return len(c.Agents) == 1 })
	if got, want := g.Agents[0].SPIFFEID, "spiffe://mesh.local/ns/default/sa/planner-sa"; got != want {
		t.Errorf("planner's SPIFFE ID = %s, want %s", got, want)
	}
	c.waitCondition(t, ctx, kube.MeshAgents, ns, "planner", metav1.ConditionTrue)

	c.create(t, ctx, kube.AuthorizationRules, ruleObj("tasks", ns, v1alpha1.AuthorizationRuleSpec{
		Identities: []v1alpha1.Identity{{SPIFFEID: "spiffe://mesh.local/ns/default/sa/planner-sa", Roles: []string{"planner"}}},
		Rules: []v1alpha1.Rule{{Name: "create-task", Match: v1alpha1.Match{Methods: []string{"post"}, Path: "/v1/tasks"},
			Require: v1alpha1.Require{AnyRole: []string{"planner"}}}},
	}))
	g = next(t, ctx, gens, "rule create-task", func(c *config.Config) bool { return ruleNames(c) == "create-task" })
	if m := g.Authz.Policy.Rules[0].Match.Methods; len(m) != 1 || m[0] != "POST" {
		t.Errorf("methods = %v: the file path's defaults (upper case) were not applied", m)
	}
	rev, err := policy.Compile(&g.Authz.Policy, g.TrustDomain, policy.Options{})
	if err != nil {
		t.Fatalf("the generation does not compile: %v", err)
	}
	if rev == nil {
		t.Fatal("nil revision")
	}

	// Update: a second rule in the same object.
	c.update(t, ctx, kube.AuthorizationRules, ns, "tasks", func(spec map[string]any) {
		rules := spec["rules"].([]any)
		spec["rules"] = append(rules, map[string]any{"name": "list-tasks", "match": map[string]any{"methods": []any{"GET"}, "pathPrefix": "/v1/tasks"}})
	})
	next(t, ctx, gens, "rules create-task,list-tasks", func(c *config.Config) bool { return ruleNames(c) == "create-task,list-tasks" })

	// Invalid, past what the CRD's schema and CEL rules check: a rule
	// name another object already has, and a path template the policy
	// validator refuses. Refused with field paths; nothing changes.
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("zz-dup", ns, v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "ok-rule", Match: v1alpha1.Match{Path: "/ok"}}, {Name: "create-task", Match: v1alpha1.Match{Path: "/x"}}},
	}))
	cond := c.waitCondition(t, ctx, kube.AuthorizationRules, ns, "zz-dup", metav1.ConditionFalse)
	if !strings.Contains(cond.Message, `spec.rules[1].name: rule "create-task" defined twice`) || cond.Reason != v1alpha1.ReasonInvalid {
		t.Errorf("zz-dup condition = %s %q", cond.Reason, cond.Message)
	}
	if cur, err := src.Load(); err != nil || ruleNames(cur) != "create-task,list-tasks" {
		t.Errorf("after an invalid object: rules %q (err %v), want create-task,list-tasks unchanged", ruleNames(cur), err)
	}

	// An agent whose pods run as a ServiceAccount that does not exist.
	c.create(t, ctx, kube.MeshAgents, agentObj("ghost", ns, v1alpha1.MeshAgentSpec{
		Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "ghost"}}, ServiceAccountName: "ghost-sa",
		InboundPort: 15001, App: "127.0.0.1:8080",
	}))
	cond = c.waitCondition(t, ctx, kube.MeshAgents, ns, "ghost", metav1.ConditionFalse)
	if !strings.Contains(cond.Message, "spec.serviceAccountName: ServiceAccount default/ghost-sa not found") {
		t.Errorf("ghost condition = %q", cond.Message)
	}
	// A peer that is not a MeshAgent: the envoy package's validator says so.
	if _, err := c.core.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "caller-sa"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.create(t, ctx, kube.MeshAgents, agentObj("caller", ns, v1alpha1.MeshAgentSpec{
		Selector:           metav1.LabelSelector{MatchLabels: map[string]string{"app": "caller"}},
		ServiceAccountName: "caller-sa", InboundPort: 15002, App: "127.0.0.1:8081",
		OutboundPort: 15003, Peers: []v1alpha1.Peer{{Name: "nobody", Addresses: []string{"10.0.0.9:15001"}}},
	}))
	cond = c.waitCondition(t, ctx, kube.MeshAgents, ns, "caller", metav1.ConditionFalse)
	if !strings.Contains(cond.Message, `spec.peers[0].name: unknown agent "nobody"`) {
		t.Errorf("caller condition = %q", cond.Message)
	}
	if cur, _ := src.Load(); len(cur.Agents) != 1 {
		t.Errorf("invalid agents reached the generation: %d agents", len(cur.Agents))
	}

	// Fixing the object makes it accepted.
	c.update(t, ctx, kube.MeshAgents, ns, "caller", func(spec map[string]any) {
		spec["peers"] = []any{map[string]any{"name": "planner", "addresses": []any{"10.0.0.9:15001"}}}
	})
	next(t, ctx, gens, "agents planner and caller", func(c *config.Config) bool { return len(c.Agents) == 2 })
	c.waitCondition(t, ctx, kube.MeshAgents, ns, "caller", metav1.ConditionTrue)

	// Delete: the rule object goes, and its rules with it.
	if err := c.dyn.Resource(kube.AuthorizationRules).Namespace(ns).Delete(ctx, "tasks", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// zz-dup's create-task no longer clashes: it is accepted now.
	next(t, ctx, gens, "rules of zz-dup only", func(c *config.Config) bool { return ruleNames(c) == "ok-rule,create-task" })
	c.waitCondition(t, ctx, kube.AuthorizationRules, ns, "zz-dup", metav1.ConditionTrue)
}

// TestCRDRulesAtAdmission: the CRDs' OpenAPI schemas and CEL rules are
// accepted by a real API server and refuse what the YAML validator
// refuses, before meshward sees it.
func TestCRDRulesAtAdmission(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tests := []struct {
		name string
		gvr  schema.GroupVersionResource
		obj  runtime.Object
		want string
	}{
		{"socket and port", kube.MeshAgents, agentObj("a", "default", v1alpha1.MeshAgentSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}, InboundPort: 1, App: "x:1",
			OutboundPort: 2, OutboundSocket: "/s", Peers: []v1alpha1.Peer{{Name: "p", Addresses: []string{"h:1"}}}}),
			"outboundSocket: exclusive with outboundPort"},
		{"port out of range", kube.MeshAgents, agentObj("b", "default", v1alpha1.MeshAgentSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}, InboundPort: 70000, App: "x:1"}),
			"spec.inboundPort"},
		{"name not a DNS label", kube.MeshAgents, agentObj("a.b", "default", v1alpha1.MeshAgentSpec{
			Selector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}, InboundPort: 1, App: "x:1"}),
			"metadata.name must be a DNS label"},
		{"two paths", kube.AuthorizationRules, ruleObj("r", "default", v1alpha1.AuthorizationRuleSpec{
			Rules: []v1alpha1.Rule{{Name: "x", Match: v1alpha1.Match{Path: "/a", PathPrefix: "/b"}}}}),
			"path, pathPrefix and pathTemplate are exclusive"},
		{"two requirements", kube.AuthorizationRules, ruleObj("r2", "default", v1alpha1.AuthorizationRuleSpec{
			Rules: []v1alpha1.Rule{{Name: "x", Require: v1alpha1.Require{Attributes: map[string]v1alpha1.ValueRequirement{"d": {Equals: "a", Contains: "b"}}}}}}),
			"set exactly one of equals, oneOf, atLeast, contains"},
		{"deny with schema", kube.AuthorizationRules, ruleObj("r3", "default", v1alpha1.AuthorizationRuleSpec{
			Rules: []v1alpha1.Rule{{Name: "x", Effect: "deny", Schema: "s"}}}),
			"a deny rule cannot name a schema"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(tc.obj)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: m}
			_, err = c.dyn.Resource(tc.gvr).Namespace("default").Create(ctx, u, metav1.CreateOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("create = %v, want an error with %q", err, tc.want)
			}
		})
	}
	// A MessageSchema keeps its document whole (no pruning).
	doc := map[string]any{"type": "object", "properties": map[string]any{"task": map[string]any{"type": "string"}}, "required": []any{"task"}}
	raw, _ := json.Marshal(doc)
	ms := &v1alpha1.MessageSchema{TypeMeta: metav1.TypeMeta{APIVersion: "meshward.dev/v1alpha1", Kind: "MessageSchema"},
		ObjectMeta: metav1.ObjectMeta{Name: "task", Namespace: "default"}, Spec: v1alpha1.MessageSchemaSpec{Schema: runtime.RawExtension{Raw: raw}}}
	c.create(t, ctx, kube.MessageSchemas, ms)
	u, err := c.dyn.Resource(kube.MessageSchemas).Namespace("default").Get(ctx, "task", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := unstructured.NestedStringSlice(u.Object, "spec", "schema", "required"); len(got) != 1 || got[0] != "task" {
		t.Errorf("stored schema lost its content: %v", u.Object["spec"])
	}
}

// TestMeshwardUserNeedsRBAC: the token user meshward runs as is refused
// until RBAC grants it, so the example's RBAC objects are what it needs.
func TestMeshwardUserNeedsRBAC(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dyn := dynamic.NewForConfigOrDie(c.srv.Config(kubetest.Meshward))
	_, err := dyn.Resource(kube.MeshAgents).List(ctx, metav1.ListOptions{})
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("list as meshward without RBAC = %v, want forbidden", err)
	}
}
