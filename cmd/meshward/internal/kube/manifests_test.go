package kube_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
)

// manifests are examples/kubernetes' files of objects (the CRDs apart).
// In the order they are applied (mesh.yaml makes namespace agents).
var manifests = []string{"rbac.yaml", "vault.yaml", "meshward.yaml", "mesh.yaml", "networkpolicy.yaml", "agent.yaml"}

// objectSet is every object of the manifests, decoded strictly (an unknown
// field is an error) with the Kubernetes scheme and meshward's kinds.
type objectSet map[string]runtime.Object // "Kind namespace/name"

func decodeManifests(t *testing.T) objectSet {
	t.Helper()
	sch := runtime.NewScheme()
	if err := scheme.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, sch, sch, kjson.SerializerOptions{Yaml: true, Strict: true})
	set := objectSet{}
	files, _ := filepath.Glob(filepath.Join(examples, "*.yaml"))
	for _, f := range files {
		if !slices.Contains(manifests, filepath.Base(f)) {
			t.Errorf("%s: not in the manifests this test checks", f)
		}
	}
	for _, name := range manifests {
		data, err := os.ReadFile(filepath.Join(examples, name))
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split("\n"+string(data), "\n---\n") {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s document %d: %v", name, i, err)
			}
			m, err := metaOf(obj)
			if err != nil {
				t.Fatal(err)
			}
			key := fmt.Sprintf("%s %s/%s", gvk.Kind, m.GetNamespace(), m.GetName())
			if _, dup := set[key]; dup {
				t.Errorf("%s: %s twice", name, key)
			}
			set[key] = obj
		}
	}
	return set
}

func stripComments(doc string) string {
	var b strings.Builder
	for l := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no metadata", obj)
	}
	return m, nil
}

func get[T runtime.Object](t *testing.T, set objectSet, kind, nsName string) T {
	t.Helper()
	obj, ok := set[kind+" "+nsName]
	if !ok {
		t.Fatalf("no %s %s in the manifests", kind, nsName)
	}
	v, ok := obj.(T)
	if !ok {
		t.Fatalf("%s %s is a %T", kind, nsName, obj)
	}
	return v
}

// configMapSettings parses a ConfigMap's meshward settings as serve or
// bootstrap would; the Vault CA the pod mounts is replaced by a file here.
func configMapSettings(t *testing.T, cm *corev1.ConfigMap, key string) *config.Config {
	t.Helper()
	data, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s", cm.Name, key)
	}
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, []byte("test: opened, not parsed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(data, "/etc/vault-ca/ca.crt") {
		t.Fatalf("ConfigMap %s: no secrets.vault.tlsCA /etc/vault-ca/ca.crt", cm.Name)
	}
	c, err := config.Parse([]byte(strings.ReplaceAll(data, "/etc/vault-ca/ca.crt", ca)), fstest.MapFS{}, "ConfigMap "+cm.Name)
	if err != nil {
		t.Fatalf("ConfigMap %s: %v", cm.Name, err)
	}
	return c
}

func hardened(t *testing.T, where string, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if c.Image == "" || sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s container %s: want an image, no privilege escalation, a read-only root and ALL capabilities dropped", where, c.Name)
	}
}

func nonRoot(t *testing.T, where string, p corev1.PodSpec) {
	t.Helper()
	if sc := p.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: want runAsNonRoot, a non-zero runAsUser and the RuntimeDefault seccomp profile", where)
	}
	for _, c := range append(slices.Clone(p.InitContainers), p.Containers...) {
		hardened(t, where, c)
	}
}

func selects(sel *metav1.LabelSelector, l map[string]string) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(labels.Set(l))
}

// allows reports whether a rule of role lets verb be done on resource of group.
func allows(rules []rbacv1.PolicyRule, group, resource, verb, name string) bool {
	for _, r := range rules {
		if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) &&
			(len(r.ResourceNames) == 0 || slices.Contains(r.ResourceNames, name)) {
			return true
		}
	}
	return false
}

// TestExamplesManifests: every object of examples/kubernetes decodes
// strictly, and they fit together: meshward's Deployment (2+ replicas,
// non-root, hardened), its PodDisruptionBudget and Service select its
// pods, its RBAC grants what the source and the Lease need, the settings
// are valid, the agent's pod is what its MeshAgent selects and carries its
// Envoy and bootstrap, and the NetworkPolicy lets agents reach only each
// other, meshward and Kafka.
func TestExamplesManifests(t *testing.T) {
	set := decodeManifests(t)

	// meshward.
	dep := get[*appsv1.Deployment](t, set, "Deployment", "meshward/meshward")
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("meshward Deployment: want 2 or more replicas")
	}
	podLabels := dep.Spec.Template.Labels
	if !selects(dep.Spec.Selector, podLabels) {
		t.Error("meshward Deployment's selector does not select its pods")
	}
	nonRoot(t, "meshward Deployment", dep.Spec.Template.Spec)
	mw := dep.Spec.Template.Spec.Containers[0]
	if args := strings.Join(mw.Args, " "); !strings.Contains(args, "serve --config /etc/meshward/meshward.yaml --source kubernetes") {
		t.Errorf("meshward args %q", args)
	}
	if mw.ReadinessProbe == nil || mw.ReadinessProbe.HTTPGet == nil || mw.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("meshward: no /readyz readiness probe")
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, set, "PodDisruptionBudget", "meshward/meshward")
	if !selects(pdb.Spec.Selector, podLabels) || pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 ||
		pdb.Spec.MinAvailable.IntValue() >= int(*dep.Spec.Replicas) {
		t.Errorf("PodDisruptionBudget: want meshward's pods, 1 <= minAvailable < replicas")
	}
	svc := get[*corev1.Service](t, set, "Service", "meshward/meshward")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) || len(svc.Spec.Selector) == 0 {
		t.Error("Service does not select meshward's pods")
	}
	cm := get[*corev1.ConfigMap](t, set, "ConfigMap", "meshward/meshward")
	base := configMapSettings(t, cm, "meshward.yaml")
	if base.Secrets.Source != "vault" || base.Secrets.Vault.Auth.Kubernetes == nil || base.Secrets.Vault.Auth.Kubernetes.Role != "meshward" {
		t.Error("meshward's settings: want Vault with Kubernetes auth, role meshward (replicas share only Vault)")
	}
	if base.XDS.Insecure || base.Authz.Server.Plaintext {
		t.Error("meshward's settings: xDS and ext_authz must be mTLS")
	}
	ports := map[int32]bool{}
	for _, p := range svc.Spec.Ports {
		ports[p.Port] = true
	}
	for _, addr := range []string{base.Authz.Server.Address, base.XDS.Address} {
		_, port, _ := strings.Cut(addr, ":")
		var n int32
		_, _ = fmt.Sscan(port, &n)
		if !ports[n] {
			t.Errorf("Service has no port for %s", addr)
		}
	}

	// RBAC: what the Source lists and watches, the status it writes, the Lease.
	sa := dep.Spec.Template.Spec.ServiceAccountName
	get[*corev1.ServiceAccount](t, set, "ServiceAccount", "meshward/"+sa)
	cr := get[*rbacv1.ClusterRole](t, set, "ClusterRole", "/meshward")
	for _, need := range []struct{ group, resource, verb string }{
		{"meshward.dev", "meshagents", "watch"}, {"meshward.dev", "authorizationrules", "list"}, {"meshward.dev", "messageschemas", "watch"},
		{"meshward.dev", "meshagents/status", "update"}, {"meshward.dev", "authorizationrules/status", "update"}, {"meshward.dev", "messageschemas/status", "update"},
		{"", "pods", "watch"}, {"", "serviceaccounts", "list"},
		{"meshward.dev", "meshagents", "patch"}, // spec.quarantine: the quarantine API, detection
	} {
		if !allows(cr.Rules, need.group, need.resource, need.verb, "") {
			t.Errorf("ClusterRole meshward does not allow %s %s.%s", need.verb, need.resource, need.group)
		}
	}
	role := get[*rbacv1.Role](t, set, "Role", "meshward/meshward-lease")
	for _, verb := range []string{"get", "update", "create"} {
		if !allows(role.Rules, "coordination.k8s.io", "leases", verb, "meshward") {
			t.Errorf("Role meshward-lease does not allow %s on Lease meshward", verb)
		}
	}
	for _, b := range []struct {
		subjects []rbacv1.Subject
		ref      rbacv1.RoleRef
		want     string
	}{
		{get[*rbacv1.ClusterRoleBinding](t, set, "ClusterRoleBinding", "/meshward").Subjects, get[*rbacv1.ClusterRoleBinding](t, set, "ClusterRoleBinding", "/meshward").RoleRef, "ClusterRole meshward"},
		{get[*rbacv1.RoleBinding](t, set, "RoleBinding", "meshward/meshward-lease").Subjects, get[*rbacv1.RoleBinding](t, set, "RoleBinding", "meshward/meshward-lease").RoleRef, "Role meshward-lease"},
	} {
		if b.ref.Kind+" "+b.ref.Name != b.want || len(b.subjects) != 1 || b.subjects[0].Kind != "ServiceAccount" || b.subjects[0].Name != sa || b.subjects[0].Namespace != "meshward" {
			t.Errorf("binding of %s: not to ServiceAccount meshward/%s", b.want, sa)
		}
	}
	vb := get[*rbacv1.ClusterRoleBinding](t, set, "ClusterRoleBinding", "/vault-tokenreview")
	if vb.RoleRef.Name != "system:auth-delegator" {
		t.Error("vault.yaml: Vault's ServiceAccount needs system:auth-delegator for TokenReviews")
	}

	// The agent: its pods are what MeshAgent planner selects, with its
	// ServiceAccount, an Envoy, and the bootstrap for that node.
	ma := get[*v1alpha1.MeshAgent](t, set, "MeshAgent", "agents/planner")
	ad := get[*appsv1.Deployment](t, set, "Deployment", "agents/planner")
	ps := ad.Spec.Template.Spec
	if !selects(&ma.Spec.Selector, ad.Spec.Template.Labels) || !selects(ad.Spec.Selector, ad.Spec.Template.Labels) {
		t.Error("planner's pods are not what MeshAgent planner (or the Deployment) selects")
	}
	if ps.ServiceAccountName != ma.Spec.ServiceAccountName {
		t.Errorf("planner's pods run as %q, MeshAgent planner says %q", ps.ServiceAccountName, ma.Spec.ServiceAccountName)
	}
	get[*corev1.ServiceAccount](t, set, "ServiceAccount", "agents/"+ps.ServiceAccountName)
	nonRoot(t, "planner Deployment", ps)
	var envoyC, renew *corev1.Container
	for i, c := range ps.Containers {
		if c.Name == "envoy" {
			envoyC = &ps.Containers[i]
		}
	}
	for i, c := range ps.InitContainers {
		if slices.Contains(c.Args, "--watch") && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			renew = &ps.InitContainers[i]
		}
	}
	if envoyC == nil || !strings.Contains(envoyC.Image, "envoy") || strings.Join(envoyC.Args, " ") != "-c /etc/envoy/envoy.yaml --log-level info" {
		t.Fatal("planner: no Envoy container reading /etc/envoy/envoy.yaml")
	}
	if renew == nil || len(ps.InitContainers) != 2 {
		t.Fatal("planner: want the bootstrap init container and the renewing sidecar (bootstrap --watch)")
	}
	for _, c := range ps.InitContainers {
		args := strings.Join(c.Args, " ")
		if !strings.HasPrefix(args, "bootstrap --config /etc/meshward/bootstrap.yaml --node "+ma.Name+" ") || !strings.Contains(args, "--out /etc/envoy") {
			t.Errorf("planner's %s: args %q: want bootstrap of node %s into /etc/envoy", c.Name, args, ma.Name)
		}
		// One node id per pod: <agent>.<pod>.<namespace>, from the downward API.
		if !strings.Contains(args, "--pod-name $(POD_NAME) --pod-namespace $(POD_NAMESPACE)") {
			t.Errorf("planner's %s: args %q: want the pod's node id (--pod-name $(POD_NAME) --pod-namespace $(POD_NAMESPACE))", c.Name, args)
		}
		fields := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				fields[e.Name] = e.ValueFrom.FieldRef.FieldPath
			}
		}
		if fields["POD_NAME"] != "metadata.name" || fields["POD_NAMESPACE"] != "metadata.namespace" {
			t.Errorf("planner's %s: env %v: want POD_NAME and POD_NAMESPACE from metadata.name and metadata.namespace", c.Name, fields)
		}
	}
	boot := configMapSettings(t, get[*corev1.ConfigMap](t, set, "ConfigMap", "agents/planner-bootstrap"), "bootstrap.yaml")
	if len(boot.Agents) != 1 {
		t.Fatalf("planner's bootstrap settings: %d agents, want planner only", len(boot.Agents))
	}
	a := boot.Agents[0]
	wantID := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", base.TrustDomain, ma.Namespace, ma.Spec.ServiceAccountName)
	if a.Name != ma.Name || a.SPIFFEID != wantID || a.InboundPort != uint32(ma.Spec.InboundPort) || a.OutboundPort != uint32(ma.Spec.OutboundPort) || a.App != ma.Spec.App {
		t.Errorf("planner's bootstrap agent %+v is not MeshAgent planner (%s %+v)", a, wantID, ma.Spec)
	}
	if boot.TrustDomain != base.TrustDomain || boot.Secrets.Vault.Address != base.Secrets.Vault.Address || boot.Secrets.Vault.PKI.Mount != base.Secrets.Vault.PKI.Mount {
		t.Error("planner's bootstrap: another trust domain or Vault than meshward's")
	}
	if k := boot.Secrets.Vault.Auth.Kubernetes; k == nil || k.Role != "agent-planner" || boot.Secrets.Vault.PKI.Role == base.Secrets.Vault.PKI.Role {
		t.Error("planner's bootstrap: want Vault role agent-planner and a PKI role of its own (not meshward's, which issues every SPIFFE ID)")
	}

	// NetworkPolicy: agents accept only agents; send only to agents,
	// meshward's two ports, Kafka and DNS.
	np := get[*networkingv1.NetworkPolicy](t, set, "NetworkPolicy", "agents/agents-isolation")
	agentLabels := ad.Spec.Template.Labels
	if !selects(&np.Spec.PodSelector, agentLabels) || !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{"Ingress", "Egress"}) {
		t.Fatal("agents-isolation does not isolate planner's pods both ways")
	}
	for _, in := range np.Spec.Ingress {
		for _, from := range in.From {
			if from.NamespaceSelector != nil || from.IPBlock != nil || !selects(from.PodSelector, agentLabels) {
				t.Errorf("agents-isolation admits more than agents: %+v", from)
			}
		}
	}
	var dests []string
	for _, e := range np.Spec.Egress {
		if len(e.To) != 1 || e.To[0].IPBlock != nil || e.To[0].PodSelector == nil {
			t.Errorf("agents-isolation egress %+v: want one peer selected by labels", e)
			continue
		}
		to := e.To[0]
		ns := "agents"
		if to.NamespaceSelector != nil {
			ns = to.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"]
		}
		var ps []string
		for _, p := range e.Ports {
			ps = append(ps, p.Port.String())
		}
		slices.Sort(ps)
		dests = append(dests, fmt.Sprintf("%s/%s:%s", ns, labels.Set(to.PodSelector.MatchLabels), strings.Join(ps, ",")))
	}
	want := []string{
		"agents/meshward.dev/agent=true:",
		"meshward/app.kubernetes.io/name=meshward:18000,9191",
		"agents/app.kubernetes.io/name=kafka:9092",
		"kube-system/k8s-app=kube-dns:53,53",
	}
	if !slices.Equal(dests, want) {
		t.Errorf("agents-isolation egress:\n got %q\nwant %q", dests, want)
	}
	if !labels.SelectorFromSet(get[*networkingv1.NetworkPolicy](t, set, "NetworkPolicy", "meshward/meshward-ingress").Spec.PodSelector.MatchLabels).Matches(labels.Set(podLabels)) {
		t.Error("meshward-ingress does not select meshward's pods")
	}
}

// TestDockerfile: the image is a static binary on distroless, non-root.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var from, user string
	for l := range strings.SplitSeq(string(data), "\n") {
		switch f := strings.Fields(l); {
		case len(f) >= 2 && f[0] == "FROM":
			from, user = f[1], ""
		case len(f) >= 2 && f[0] == "USER":
			user = f[1]
		}
	}
	if !strings.HasPrefix(from, "gcr.io/distroless/static") || !strings.HasSuffix(from, ":nonroot") {
		t.Errorf("final stage FROM %s: want gcr.io/distroless/static...:nonroot", from)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("final stage USER %q: want a non-root numeric user", user)
	}
	if !strings.Contains(string(data), "CGO_ENABLED=0") {
		t.Error("the binary must be static (CGO_ENABLED=0): distroless/static has no libc")
	}
}
