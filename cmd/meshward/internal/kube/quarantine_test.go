package kube

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
)

// TestBuildQuarantine: which SPIFFE IDs a quarantined MeshAgent
// quarantines (failing closed: every one it may serve under), and who and
// when the entry says.
func TestBuildQuarantine(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	pod := func(ns, app, sa string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: app + "-" + sa, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{ServiceAccountName: sa}}
	}
	pods := []*corev1.Pod{pod("default", "planner", "planner"), pod("default", "planner", "other"), pod("prod", "planner", "planner"), pod("default", "x", "")}
	agent := func(ns, name string, mut func(*v1alpha1.MeshAgent)) *v1alpha1.MeshAgent {
		ma := &v1alpha1.MeshAgent{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, CreationTimestamp: metav1.NewTime(t0)},
			Spec: v1alpha1.MeshAgentSpec{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
				Quarantine: &v1alpha1.Quarantine{}}}
		mut(ma)
		return ma
	}
	const td = "mesh.local"
	id := func(ns, sa string) string { return "spiffe://" + td + "/ns/" + ns + "/sa/" + sa }
	for _, c := range []struct {
		name   string
		agents []*v1alpha1.MeshAgent
		want   []quarantine.Entry
	}{
		{"every ServiceAccount its selector selects, in its namespace", []*v1alpha1.MeshAgent{agent("default", "planner", func(ma *v1alpha1.MeshAgent) {
			ma.Spec.Quarantine = &v1alpha1.Quarantine{Reason: "INC-1", By: "alice", Since: &metav1.Time{Time: t1}}
		})}, []quarantine.Entry{
			{SPIFFEID: id("default", "other"), Reason: "INC-1", By: "alice", At: t1, Agent: "default/planner"},
			{SPIFFEID: id("default", "planner"), Reason: "INC-1", By: "alice", At: t1, Agent: "default/planner"},
		}},
		{"serviceAccountName and status with no pod; the field manager when by is unset", []*v1alpha1.MeshAgent{agent("prod", "gone", func(ma *v1alpha1.MeshAgent) {
			ma.Spec.ServiceAccountName = "gone"
			ma.Status.SPIFFEID = id("prod", "was")
			ma.ManagedFields = []metav1.ManagedFieldsEntry{
				{Manager: "meshward", Subresource: "status", FieldsV1: metav1.NewFieldsV1(`{"f:status":{}}`)},
				{Manager: "kubectl-patch", Time: &metav1.Time{Time: t1}, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{"f:quarantine":{}}}`)},
			}
		})}, []quarantine.Entry{
			{SPIFFEID: id("prod", "gone"), By: "unknown (spec.quarantine set by field manager kubectl-patch)", At: t1, Agent: "prod/gone"},
			{SPIFFEID: id("prod", "was"), By: "unknown (spec.quarantine set by field manager kubectl-patch)", At: t1, Agent: "prod/gone"},
		}},
		{"an ID once, for the first agent; other trust domains and meshward's own ignored", []*v1alpha1.MeshAgent{
			agent("default", "x", func(ma *v1alpha1.MeshAgent) { ma.Status.SPIFFEID = "spiffe://other/ns/default/sa/x" }),
			agent("default", "b", func(ma *v1alpha1.MeshAgent) { ma.Spec.ServiceAccountName = "default" }),
			agent("default", "a", func(ma *v1alpha1.MeshAgent) { ma.Status.SPIFFEID = "spiffe://" + td + "/meshward/xds" }),
		}, []quarantine.Entry{
			{SPIFFEID: id("default", "default"), By: "unknown (spec.quarantine set by field manager unknown)", At: t0, Agent: "default/b"},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := buildQuarantine(td, c.agents, pods)
			if len(st.Quarantined) != len(c.want) {
				t.Fatalf("got %+v\nwant %+v", st.Quarantined, c.want)
			}
			for i, e := range st.Quarantined {
				if w := c.want[i]; e.SPIFFEID != w.SPIFFEID || e.Reason != w.Reason || e.By != w.By || !e.At.Equal(w.At) || e.Agent != w.Agent {
					t.Errorf("[%d] = %+v, want %+v", i, e, w)
				}
			}
		})
	}
}

// TestReleaseOf: who a release names.
func TestReleaseOf(t *testing.T) {
	now := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	e := quarantine.Entry{SPIFFEID: "spiffe://mesh.local/ns/default/sa/planner", Agent: "default/planner"}
	annotated := &unstructured.Unstructured{}
	annotated.SetAnnotations(map[string]string{AnnotationReleasedBy: "bob", AnnotationReleasedAt: "2026-12-02T10:30:00Z"})
	bare := &unstructured.Unstructured{}
	bare.SetManagedFields([]metav1.ManagedFieldsEntry{
		{Manager: "old", Time: &metav1.Time{Time: now.Add(-time.Hour)}},
		{Manager: "kubectl-edit", Time: &metav1.Time{Time: now.Add(-time.Minute)}},
		{Manager: "meshward", Subresource: "status", Time: &metav1.Time{Time: now}},
	})
	for _, c := range []struct {
		name string
		u    *unstructured.Unstructured
		by   string
		at   time.Time
	}{
		{"annotated by meshward release", annotated, "bob", time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)},
		{"kubectl, no annotation", bare, "unknown (spec.quarantine removed; the last field manager is kubectl-edit)", now},
		{"deleted", nil, "unknown (MeshAgent default/planner deleted)", now},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := releaseOf(e, c.u, now)
			if r.By != c.by || !r.At.Equal(c.at) || r.SPIFFEID != e.SPIFFEID || !strings.Contains(r.Agent, "planner") {
				t.Errorf("release %+v, want by %q at %v", r, c.by, c.at)
			}
		})
	}
}
