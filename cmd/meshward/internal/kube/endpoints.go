package kube

import (
	"cmp"
	"context"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/meshward/meshward/envoy"
)

// podSelector is where a served agent's pods are: its MeshAgent's
// namespace and selector.
type podSelector struct {
	namespace string
	selector  labels.Selector
}

// endpointIndex holds every served agent's endpoints, the IPs of the pods
// its MeshAgent selects with their readiness. It changes with the pods
// (IP, Ready condition, labels, deletion) without building a generation:
// the configuration does not change, only the peers' load assignments.
type endpointIndex struct {
	mu     sync.Mutex
	agents map[string]podSelector      // of the last generation built, by agent name
	eps    map[string][]envoy.Endpoint // by agent name, sorted by address; never modified, replaced
	dirty  map[string]bool             // agents to recompute
	kick   chan struct{}
}

func newEndpointIndex() *endpointIndex {
	return &endpointIndex{agents: map[string]podSelector{}, eps: map[string][]envoy.Endpoint{},
		dirty: map[string]bool{}, kick: make(chan struct{}, 1)}
}

func (x *endpointIndex) poke() {
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// setAgents takes the agents of a new generation; those whose selector or
// namespace changed, new or gone, are recomputed.
func (x *endpointIndex) setAgents(agents map[string]podSelector) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name, old := range x.agents {
		cur, ok := agents[name]
		if !ok || cur.namespace != old.namespace || cur.selector.String() != old.selector.String() {
			x.dirty[name] = true
		}
	}
	for name := range agents {
		if _, ok := x.agents[name]; !ok {
			x.dirty[name] = true
		}
	}
	x.agents = agents
	if len(x.dirty) > 0 {
		x.poke()
	}
}

// podHandler marks the agents that select a changed pod, before or after
// the change.
func (x *endpointIndex) podHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { x.touch(podOf(obj), nil) },
		DeleteFunc: func(obj any) { x.touch(podOf(obj), nil) },
		UpdateFunc: func(old, cur any) {
			o, c := podOf(old), podOf(cur)
			if o != nil && c != nil && endpointOf(o) == endpointOf(c) && labels.Equals(o.Labels, c.Labels) {
				return // nothing an endpoint shows changed (another condition, an annotation)
			}
			x.touch(c, o)
		},
	}
}

func podOf(obj any) *corev1.Pod {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	p, _ := obj.(*corev1.Pod)
	return p
}

func (x *endpointIndex) touch(pods ...*corev1.Pod) {
	x.mu.Lock()
	defer x.mu.Unlock()
	marked := false
	for name, ps := range x.agents {
		for _, p := range pods {
			if p != nil && p.Namespace == ps.namespace && ps.selector.Matches(labels.Set(p.Labels)) {
				x.dirty[name] = true
				marked = true
				break
			}
		}
	}
	if marked {
		x.poke()
	}
}

// podEndpoint is what a pod gives its agent's endpoints.
type podEndpoint struct {
	ip    string
	ready bool
	ok    bool // it has an endpoint at all
}

// endpointOf: a pod with an IP that has not finished is an endpoint,
// ready when its Ready condition is True and it is not being deleted (as
// an EndpointSlice's ready).
func endpointOf(p *corev1.Pod) podEndpoint {
	if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return podEndpoint{}
	}
	ready := false
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	return podEndpoint{ip: p.Status.PodIP, ready: ready && p.DeletionTimestamp == nil, ok: true}
}

// refresh recomputes the dirty agents from pods (the pod informer's
// store, indexed by namespace) and returns those whose endpoints changed,
// sorted.
func (x *endpointIndex) refresh(pods cache.Indexer) []string {
	x.mu.Lock()
	todo := make(map[string]podSelector, len(x.dirty))
	var gone []string
	for name := range x.dirty {
		if ps, ok := x.agents[name]; ok {
			todo[name] = ps
		} else {
			gone = append(gone, name)
		}
	}
	clear(x.dirty)
	x.mu.Unlock()

	computed := make(map[string][]envoy.Endpoint, len(todo))
	for name, ps := range todo {
		objs, err := pods.ByIndex(cache.NamespaceIndex, ps.namespace)
		if err != nil {
			objs = nil // the index exists (New adds it): not reached
		}
		computed[name] = selectEndpoints(objs, ps.selector)
	}

	x.mu.Lock()
	defer x.mu.Unlock()
	var changed []string
	for _, name := range gone {
		if _, ok := x.eps[name]; ok {
			delete(x.eps, name)
			changed = append(changed, name)
		}
	}
	for name, eps := range computed {
		if _, still := x.agents[name]; !still {
			continue // gone meanwhile: dirty again, the next refresh deletes it
		}
		if old, ok := x.eps[name]; !ok || !slices.Equal(old, eps) {
			x.eps[name] = eps
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	return changed
}

// selectEndpoints is the endpoints of the pods among objs that sel
// selects, sorted by address; of pods sharing an IP (host network) one
// endpoint, ready if any of them is.
func selectEndpoints(objs []any, sel labels.Selector) []envoy.Endpoint {
	eps := []envoy.Endpoint{}
	for _, obj := range objs {
		p, ok := obj.(*corev1.Pod)
		if !ok || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if e := endpointOf(p); e.ok {
			eps = append(eps, envoy.Endpoint{Address: e.ip, Ready: e.ready})
		}
	}
	slices.SortFunc(eps, func(a, b envoy.Endpoint) int {
		if c := cmp.Compare(a.Address, b.Address); c != 0 {
			return c
		}
		return -cmpBool(a.Ready, b.Ready) // ready first: Compact keeps it
	})
	return slices.CompactFunc(eps, func(a, b envoy.Endpoint) bool { return a.Address == b.Address })
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// Endpoints returns the endpoints of the served agent named agent: the
// IPs of the pods its MeshAgent selects (those with an IP, not finished),
// sorted by address, each ready when the pod's Ready condition is True
// and it is not being deleted. None (an empty list) for an agent without
// pods or one not served. The slice is shared: do not modify it.
func (s *Source) Endpoints(agent string) []envoy.Endpoint {
	s.eps.mu.Lock()
	defer s.eps.mu.Unlock()
	return s.eps.eps[agent]
}

// WatchEndpoints recomputes the endpoints of the agents whose pods
// changed (without debounce, and without building a generation) and
// calls apply with the names of the agents whose endpoints changed,
// sorted, one call at a time, until ctx ends. Endpoints returns the new
// ones by then. Start first.
func (s *Source) WatchEndpoints(ctx context.Context, apply func(agents []string)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.eps.kick:
		}
		if changed := s.eps.refresh(s.pods.GetIndexer()); len(changed) > 0 {
			apply(changed)
		}
	}
}

// NodeAgent returns the served agent that the Envoy node id of one of its
// pods names: <agent>.<pod>.<namespace>, namespace being the agent's
// MeshAgent's (envoy.PodNodeID). Whether that pod
// exists is not asked: a node is authenticated by its client
// certificate's SPIFFE ID, the agent's, and the pod part only tells the
// agent's Envoys apart.
func (s *Source) NodeAgent(node string) (string, bool) {
	agent, _, ns, ok := envoy.ParsePodNodeID(node)
	if !ok {
		return "", false
	}
	s.eps.mu.Lock()
	ps, served := s.eps.agents[agent]
	s.eps.mu.Unlock()
	if !served || ps.namespace != ns {
		return "", false
	}
	return agent, true
}
