// Package kube is meshward's Kubernetes configuration source (serve
// --source kubernetes): it watches MeshAgents, AuthorizationRules and
// MessageSchemas (meshward.dev/v1alpha1), and the Pods and ServiceAccounts
// that give agents their SPIFFE IDs, and builds from them, beside the
// settings of the configuration file, the same config.Config the file
// path builds, validated by the same code. ext_authz and xDS take its
// generations from runtime.Origin as they take the file's.
//
// An object that is invalid, alone or beside the others, is left out of
// the generation and reported in its status.conditions (Accepted=False,
// each problem with its field path); the rest keep serving.
//
// Any number of replicas build and serve the same generations from the
// same objects; with WithLease only the holder of a coordination.k8s.io
// Lease writes status.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/policy"
)

// GVRs of the watched custom resources.
var (
	MeshAgents         = v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceMeshAgents)
	AuthorizationRules = v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceAuthorizationRules)
	MessageSchemas     = v1alpha1.GroupVersion.WithResource(v1alpha1.ResourceMessageSchemas)
)

// DefaultDebounce is how long the source waits after a change for more
// before building a generation.
const DefaultDebounce = 100 * time.Millisecond

// SyncTimeout bounds the wait for the first full list of every watched kind.
const SyncTimeout = 60 * time.Second

// ErrFileHasMesh is returned by New when the configuration file sets what
// the cluster's objects give.
var ErrFileHasMesh = errors.New("with --source kubernetes the cluster's objects give the agents, identities, levels, rules and schemas")

// Source builds configuration generations from the Kubernetes API.
type Source struct {
	base     *config.Config
	popts    policy.Options
	dyn      dynamic.Interface
	core     kubernetes.Interface
	log      *slog.Logger
	debounce time.Duration
	kick     chan struct{}

	lease   *Lease           // nil: no election, this Source writes status
	leading atomic.Bool      // holds lease
	led     chan struct{}    // the Lease was just taken: write status
	statusq chan *generation // the newest generation whose status is to be written

	crds   map[schema.GroupVersionResource]cache.SharedIndexInformer
	pods   cache.SharedIndexInformer
	sas    cache.SharedIndexInformer
	synced []cache.InformerSynced
	eps    *endpointIndex

	mu      sync.Mutex
	cur     *generation // last generation built without error
	lastErr error       // of the last build, nil when it built

	qkick chan struct{} // a MeshAgent, Pod or ServiceAccount changed
	qmu   sync.Mutex
	qcur  *quarantine.State // of the MeshAgents' spec.quarantine
}

// Option configures a Source.
type Option func(*Source)

// WithLogger sets the logger (default: none).
func WithLogger(l *slog.Logger) Option { return func(s *Source) { s.log = l } }

// WithDebounce sets the wait after a change (default DefaultDebounce).
func WithDebounce(d time.Duration) Option { return func(s *Source) { s.debounce = d } }

// New returns a Source reading the cluster rc reaches. base is the
// configuration file's content: trust domain, servers, secrets, audit,
// Envoy options; it must not set agents, authz identities, levels, rules
// or schemas, which come from the cluster. popts compile the policy the
// way the file path does (they must not read files for schemas: the
// cluster's schemas are inline).
func New(rc *rest.Config, base *config.Config, popts policy.Options, opts ...Option) (*Source, error) {
	p := base.Authz.Policy
	var set []string
	if len(base.Agents) > 0 {
		set = append(set, "agents")
	}
	if len(p.Identities) > 0 {
		set = append(set, "authz.identities")
	}
	if len(p.Levels) > 0 {
		set = append(set, "authz.levels")
	}
	if len(p.Rules) > 0 {
		set = append(set, "authz.rules")
	}
	if len(p.Schemas) > 0 {
		set = append(set, "authz.schemas")
	}
	if len(set) > 0 {
		return nil, fmt.Errorf("kubernetes: %s sets %s: %w (MeshAgent, AuthorizationRule, MessageSchema): remove them from the file",
			base.Source, strings.Join(set, ", "), ErrFileHasMesh)
	}
	if r := p.Rego; r != nil && r.BundleURL != "" {
		return nil, fmt.Errorf("kubernetes: %s: authz.rego.bundleURL is not supported with --source kubernetes yet", base.Source)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	core, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	s := &Source{base: base, popts: popts, dyn: dyn, core: core, debounce: DefaultDebounce,
		log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1), led: make(chan struct{}, 1),
		qkick: make(chan struct{}, 1), statusq: make(chan *generation, 1)}
	for _, o := range opts {
		o(s)
	}
	if s.lease != nil {
		if err := s.lease.validate(); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
	}
	dynf := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	s.crds = map[schema.GroupVersionResource]cache.SharedIndexInformer{}
	for _, gvr := range []schema.GroupVersionResource{MeshAgents, AuthorizationRules, MessageSchemas} {
		inf := dynf.ForResource(gvr).Informer()
		s.crds[gvr] = inf
		if _, err := inf.AddEventHandler(s.handler(specChanged)); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	// Every change of a MeshAgent may be one of its spec.quarantine.
	if _, err := s.crds[MeshAgents].AddEventHandler(s.quarantineHandler()); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	cf := informers.NewSharedInformerFactory(core, 0)
	s.pods = cf.Core().V1().Pods().Informer()
	s.sas = cf.Core().V1().ServiceAccounts().Informer()
	// The served agents' endpoints follow their pods without a build.
	s.eps = newEndpointIndex()
	if _, err := s.pods.AddEventHandler(s.eps.podHandler()); err != nil {
		return nil, fmt.Errorf("kubernetes: %w", err)
	}
	for _, inf := range []cache.SharedIndexInformer{s.pods, s.sas} {
		if _, err := inf.AddEventHandler(s.handler(podChanged)); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		if _, err := inf.AddEventHandler(s.quarantineHandler()); err != nil {
			return nil, fmt.Errorf("kubernetes: %w", err)
		}
		s.synced = append(s.synced, inf.HasSynced)
	}
	return s, nil
}

// handler kicks a build for adds, deletes and the updates changed says
// matter (status writes, including the source's own, do not).
func (s *Source) handler(changed func(old, cur any) bool) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.poke() },
		DeleteFunc: func(any) { s.poke() },
		UpdateFunc: func(old, cur any) {
			if changed(old, cur) {
				s.poke()
			}
		},
	}
}

// quarantineHandler kicks a recomputation of the quarantine state.
func (s *Source) quarantineHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.pokeQuarantine() },
		DeleteFunc: func(any) { s.pokeQuarantine() },
		UpdateFunc: func(any, any) { s.pokeQuarantine() },
	}
}

func (s *Source) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// specChanged: a custom resource's generation moves only with its spec.
func specChanged(old, cur any) bool {
	o, ok1 := old.(metav1.Object)
	c, ok2 := cur.(metav1.Object)
	return !ok1 || !ok2 || o.GetGeneration() != c.GetGeneration() || o.GetGeneration() == 0
}

// podChanged: what a pod gives an agent is its labels, ServiceAccount and
// whether it is going away.
func podChanged(old, cur any) bool {
	o, ok1 := old.(*corev1.Pod)
	c, ok2 := cur.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !reflect.DeepEqual(o.Labels, c.Labels) || o.Spec.ServiceAccountName != c.Spec.ServiceAccountName ||
		(o.DeletionTimestamp == nil) != (c.DeletionTimestamp == nil)
}

// Start starts the informers (they stop when ctx ends), waits until every
// kind is listed and builds the first generation; Run reports it in the
// objects' status (with a Lease, once it holds it). An
// error building it (one that no object can be blamed for) is returned:
// serve does not start on it, as with a bad file.
func (s *Source) Start(ctx context.Context) error {
	for _, inf := range s.crds {
		go inf.RunWithContext(ctx)
	}
	go s.pods.RunWithContext(ctx)
	go s.sas.RunWithContext(ctx)
	sctx, cancel := context.WithTimeout(ctx, SyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), s.synced...) {
		return fmt.Errorf("kubernetes: the watched kinds were not listed within %v (are the CRDs of examples/kubernetes/crds installed, and may meshward list them?)", SyncTimeout)
	}
	s.qmu.Lock()
	s.qcur = s.quarantineState(nil, time.Now())
	s.qmu.Unlock()
	if _, err := s.rebuild(); err != nil {
		return err
	}
	s.eps.refresh(s.pods.GetIndexer()) // the first generation's agents' endpoints, before anything serves them
	return nil
}

// Load returns the last generation built without error, or the error of
// the last build: runtime.Origin hands either to the components, which keep
// what they serve on an error.
func (s *Source) Load() (*config.Config, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastErr != nil {
		return nil, s.lastErr
	}
	if s.cur == nil {
		return nil, errors.New("kubernetes: no generation built yet (Start first)")
	}
	c := *s.cur.cfg // a copy: Origin sets its own field on it
	return &c, nil
}

// Run builds a generation after each change (debounced) and calls changed
// when it differs from the last one, until ctx ends. Start first. With a
// Lease it stands for it meanwhile, and writes status only while it
// holds it (at once when it takes it); it releases it when ctx ends.
//
// Status is written beside the builds, not between them: a change is
// built and served while the status of an earlier generation is still
// being written (at the client's rate limit, the first status of 1,000
// objects takes a while), and the status written is the newest
// generation's.
func (s *Source) Run(ctx context.Context, changed func(ctx context.Context)) error {
	if s.lease != nil {
		ectx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.elect(ectx)
		}()
		defer func() {
			stop()
			<-done // the Lease released
		}()
	}
	wctx, stopWriter := context.WithCancel(ctx)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for {
			select {
			case <-wctx.Done():
				return
			case g := <-s.statusq:
				s.writeStatus(wctx, g)
			}
		}
	}()
	defer func() {
		stopWriter()
		<-written
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.led:
			s.mu.Lock()
			g := s.cur
			s.mu.Unlock()
			if g != nil {
				s.queueStatus(g)
			}
			continue
		case <-s.kick:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.debounce):
		}
		select { // changes within the debounce are in this build
		case <-s.kick:
		default:
		}
		diff, err := s.rebuild()
		if err != nil {
			s.log.Error("kubernetes: generation not built; keeping the previous one", "error", err)
		}
		if diff || err != nil {
			changed(ctx)
		}
	}
}

// rebuild builds a generation from the informers' contents and queues the
// objects' status for Run's writer; diff says whether the served
// configuration changed.
func (s *Source) rebuild() (diff bool, err error) {
	objs, err := s.objects()
	if err != nil {
		return false, err
	}
	g, err := build(s.base, objs, s.popts)
	s.mu.Lock()
	prev := s.cur
	if err == nil {
		s.cur = g
		s.eps.setAgents(g.pods)
	}
	changed := err != nil || prev == nil || !sameMesh(prev.cfg, g.cfg)
	s.lastErr = err
	s.mu.Unlock()
	if err != nil {
		return true, err
	}
	s.queueStatus(g)
	return changed, nil
}

// queueStatus hands g to the status writer, in place of a generation
// still waiting there. Only one goroutine at a time calls it (Start,
// then Run's).
func (s *Source) queueStatus(g *generation) {
	for {
		select {
		case s.statusq <- g:
			return
		default:
		}
		select {
		case <-s.statusq:
		default:
		}
	}
}

// sameMesh reports whether two generations serve the same.
func sameMesh(a, b *config.Config) bool {
	return reflect.DeepEqual(a.Agents, b.Agents) && reflect.DeepEqual(a.Authz.Policy, b.Authz.Policy)
}

func (s *Source) objects() (objects, error) {
	var o objects
	var errs []error
	for _, obj := range s.crds[MeshAgents].GetStore().List() {
		var m v1alpha1.MeshAgent
		errs = append(errs, fromUnstructured(obj, &m))
		o.agents = append(o.agents, &m)
	}
	for _, obj := range s.crds[AuthorizationRules].GetStore().List() {
		var r v1alpha1.AuthorizationRule
		errs = append(errs, fromUnstructured(obj, &r))
		o.rules = append(o.rules, &r)
	}
	for _, obj := range s.crds[MessageSchemas].GetStore().List() {
		var m v1alpha1.MessageSchema
		errs = append(errs, fromUnstructured(obj, &m))
		o.schemas = append(o.schemas, &m)
	}
	for _, obj := range s.pods.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok {
			o.pods = append(o.pods, p)
		}
	}
	o.serviceAccounts = map[string]bool{}
	for _, obj := range s.sas.GetStore().List() {
		if sa, ok := obj.(*corev1.ServiceAccount); ok {
			o.serviceAccounts[sa.Namespace+"/"+sa.Name] = true
		}
	}
	if err := errors.Join(errs...); err != nil {
		return objects{}, fmt.Errorf("kubernetes: %w", err)
	}
	return o, nil
}

func fromUnstructured(obj any, into any) error {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected %T in an informer of custom resources", obj)
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}

// writeStatus sets the Accepted condition (and a MeshAgent's SPIFFE ID)
// of every object whose status says otherwise, when this Source is the
// one that writes status (Leading). A conflict is left to the next build,
// which the object's change brings.
func (s *Source) writeStatus(ctx context.Context, g *generation) {
	if !s.Leading() {
		return
	}
	gvrOf := map[string]schema.GroupVersionResource{"MeshAgent": MeshAgents, "AuthorizationRule": AuthorizationRules, "MessageSchema": MessageSchemas}
	for r, v := range g.verdicts {
		if !s.Leading() { // the Lease was lost meanwhile
			return
		}
		gvr := gvrOf[r.kind]
		obj, exists, err := s.crds[gvr].GetStore().GetByKey(r.namespace + "/" + r.name)
		if err != nil || !exists {
			continue
		}
		u := obj.(*unstructured.Unstructured).DeepCopy() //nolint:forcetypeassert // the informer holds only these
		var st v1alpha1.Status
		if m, ok := u.Object["status"].(map[string]any); ok {
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st) // a status that does not parse is rewritten
		}
		cond := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue,
			Reason: v1alpha1.ReasonAccepted, Message: "served", ObservedGeneration: v.generation}
		if len(v.problems) > 0 {
			cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, v1alpha1.ReasonInvalid, strings.Join(v.problems, "\n")
		}
		old := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionAccepted)
		if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message &&
			old.ObservedGeneration == cond.ObservedGeneration && st.SPIFFEID == v.spiffeID {
			continue
		}
		meta.SetStatusCondition(&st.Conditions, cond)
		st.SPIFFEID = v.spiffeID
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			s.log.Error("kubernetes: status", "object", r.String(), "error", err)
			continue
		}
		u.Object["status"] = m
		_, err = s.dyn.Resource(gvr).Namespace(r.namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{FieldManager: "meshward"})
		switch {
		case err == nil:
			if len(v.problems) > 0 {
				s.log.Warn("kubernetes: object not accepted", "object", r.String(), "problems", v.problems)
			}
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			// The object changed or went away: the next build sees it.
		default:
			s.log.Error("kubernetes: status not written", "object", r.String(), "error", err)
		}
	}
}
