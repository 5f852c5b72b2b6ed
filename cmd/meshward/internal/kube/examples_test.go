package kube_test

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/policy"
)

var examples = filepath.Join("..", "..", "..", "..", "examples", "kubernetes")

// TestExamplesApplyAndServe: every manifest of examples/kubernetes is
// created on a real API server (which validates each object as kubectl
// apply would have it); meshward, running as a user with only
// the example ClusterRole and Role, builds the example mesh from them,
// takes the example's Lease and writes Accepted=True on each object; the
// ConfigMap's settings are a valid base.
func TestExamplesApplyAndServe(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var files []string
	for _, m := range manifests {
		files = append(files, filepath.Join(examples, m))
	}
	kubetest.Apply(t, c.rc, files...)
	// The example binds the ClusterRole to meshward's ServiceAccount; the
	// test's meshward user gets the same role.
	user := []rbacv1.Subject{{Kind: "User", Name: kubetest.Meshward}}
	if _, err := c.core.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "meshward-test-user"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "meshward"},
		Subjects:   user,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.core.RbacV1().RoleBindings("meshward").Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "meshward-lease-test-user", Namespace: "meshward"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "meshward-lease"},
		Subjects:   user,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	cm, err := c.core.CoreV1().ConfigMaps("meshward").Get(ctx, "meshward", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := configMapSettings(t, cm, "meshward.yaml")
	src, err := kube.New(c.srv.Config(kubetest.Meshward), base,
		policy.Options{NewBodyChecker: policy.NewSchemaBodyChecker(base.Authz.Policy.Body)}, kube.WithDebounce(20*time.Millisecond),
		kube.WithLease(kube.Lease{Namespace: "meshward", Name: "meshward", Identity: "replica-0"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Start(ctx); err != nil {
		t.Fatalf("Start as the example's role: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(ctx, func(context.Context) {})
	}()
	defer func() {
		cancel()
		<-done
	}()
	g, err := src.Load()
	if err != nil {
		t.Fatal(err)
	}
	var agents []string
	for _, a := range g.Agents {
		agents = append(agents, a.Name+"="+a.SPIFFEID)
	}
	slices.Sort(agents)
	if got, want := strings.Join(agents, ","), "executor=spiffe://mesh.local/ns/agents/sa/executor,planner=spiffe://mesh.local/ns/agents/sa/planner"; got != want {
		t.Errorf("agents %s, want %s", got, want)
	}
	if ruleNames(g) != "create-task" || len(g.Authz.Policy.Schemas) != 1 {
		t.Errorf("rules %q, %d schemas; want create-task and the task schema", ruleNames(g), len(g.Authz.Policy.Schemas))
	}
	c.waitCondition(t, ctx, kube.MeshAgents, "agents", "planner", metav1.ConditionTrue)
	c.waitCondition(t, ctx, kube.MeshAgents, "agents", "executor", metav1.ConditionTrue)
	c.waitCondition(t, ctx, kube.AuthorizationRules, "agents", "tasks", metav1.ConditionTrue)
	c.waitCondition(t, ctx, kube.MessageSchemas, "agents", "task", metav1.ConditionTrue)
	u, err := c.dyn.Resource(kube.MeshAgents).Namespace("agents").Get(ctx, "planner", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id, _, _ := unstructured.NestedString(u.Object, "status", "spiffeID"); id != "spiffe://mesh.local/ns/agents/sa/planner" {
		t.Errorf("planner status.spiffeID = %q", id)
	}
}
