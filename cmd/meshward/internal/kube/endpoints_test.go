package kube

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/meshward/meshward/envoy"
)

func testPod(name, app, ip string, phase corev1.PodPhase, ready bool) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "agents", Labels: map[string]string{"app": app}},
		Status: corev1.PodStatus{Phase: phase, PodIP: ip,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

// TestSelectEndpoints: what a pod gives its agent's endpoints, as an
// EndpointSlice would have it.
func TestSelectEndpoints(t *testing.T) {
	deleting := testPod("executor-4", "executor", "10.0.0.5", corev1.PodRunning, true)
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	objs := []any{
		testPod("executor-0", "executor", "10.0.0.2", corev1.PodRunning, true),
		testPod("executor-1", "executor", "10.0.0.1", corev1.PodRunning, false),  // unready: listed, not ready
		testPod("executor-2", "executor", "", corev1.PodPending, false),          // no IP yet: none
		testPod("executor-3", "executor", "10.0.0.3", corev1.PodSucceeded, true), // finished: none
		deleting, // terminating: not ready
		testPod("planner-0", "planner", "10.0.0.9", corev1.PodRunning, true), // not selected
		// Host network: two pods on one IP are one endpoint, ready if one is.
		testPod("executor-5", "executor", "10.0.0.7", corev1.PodRunning, false),
		testPod("executor-6", "executor", "10.0.0.7", corev1.PodRunning, true),
		"not a pod",
	}
	sel := labels.SelectorFromSet(labels.Set{"app": "executor"})
	got := selectEndpoints(objs, sel)
	want := []envoy.Endpoint{
		{Address: "10.0.0.1", Ready: false},
		{Address: "10.0.0.2", Ready: true},
		{Address: "10.0.0.5", Ready: false},
		{Address: "10.0.0.7", Ready: true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("selectEndpoints = %v, want %v", got, want)
	}
	if got := selectEndpoints(nil, sel); got == nil || len(got) != 0 {
		t.Errorf("no pods: %#v, want an empty list", got)
	}
}

// TestEndpointIndexRefresh: only the agents whose pods changed are
// recomputed and reported, and an agent gone from the generation loses
// its endpoints.
func TestEndpointIndexRefresh(t *testing.T) {
	store := newPodIndexer()
	x := newEndpointIndex()
	h := x.podHandler()
	sel := func(app string) podSelector {
		return podSelector{namespace: "agents", selector: labels.SelectorFromSet(labels.Set{"app": app})}
	}
	x.setAgents(map[string]podSelector{"executor": sel("executor"), "planner": sel("planner")})
	if got := x.refresh(store); !slices.Equal(got, []string{"executor", "planner"}) {
		t.Fatalf("first refresh: %v", got)
	}
	p := testPod("executor-0", "executor", "10.0.0.1", corev1.PodRunning, false)
	add(t, store, p)
	h.OnAdd(p, false)
	if got := x.refresh(store); !slices.Equal(got, []string{"executor"}) {
		t.Fatalf("after executor's pod: %v", got)
	}
	// An annotation: nothing an endpoint shows.
	q := p.DeepCopy()
	q.Annotations = map[string]string{"a": "b"}
	h.OnUpdate(p, q)
	if got := x.refresh(store); len(got) != 0 {
		t.Fatalf("annotation changed: %v", got)
	}
	// Ready.
	r := testPod("executor-0", "executor", "10.0.0.1", corev1.PodRunning, true)
	add(t, store, r)
	h.OnUpdate(q, r)
	if got := x.refresh(store); !slices.Equal(got, []string{"executor"}) {
		t.Fatalf("after ready: %v", got)
	}
	x.mu.Lock()
	eps := x.eps["executor"]
	x.mu.Unlock()
	if !slices.Equal(eps, []envoy.Endpoint{{Address: "10.0.0.1", Ready: true}}) {
		t.Fatalf("executor's endpoints %v", eps)
	}
	// executor leaves the generation.
	x.setAgents(map[string]podSelector{"planner": sel("planner")})
	if got := x.refresh(store); !slices.Equal(got, []string{"executor"}) {
		t.Fatalf("executor gone: %v", got)
	}
	x.mu.Lock()
	_, still := x.eps["executor"]
	x.mu.Unlock()
	if still {
		t.Error("a gone agent kept its endpoints")
	}
}

// newPodIndexer is a pod store indexed by namespace, as the informer's.
func newPodIndexer() cache.Indexer {
	return cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
}

func add(t *testing.T, store cache.Indexer, p *corev1.Pod) {
	t.Helper()
	if err := store.Update(p); err != nil {
		t.Fatal(err)
	}
}
