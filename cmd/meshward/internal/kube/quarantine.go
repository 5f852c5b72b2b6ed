package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/cmd/meshward/internal/quarantine"
	"github.com/meshward/meshward/envoy"
)

// Annotations `meshward release` (and the admin API) set beside removing
// spec.quarantine, so that the audit event of the release names who did
// it; the field itself is gone by then.
const (
	AnnotationReleasedBy = "meshward.dev/released-by"
	AnnotationReleasedAt = "meshward.dev/released-at"
)

// maxReleased bounds the releases the state remembers (as the file's).
const maxReleased = 100

// Errors of the Editor: an identity no MeshAgent has, a name several
// namespaces have.
var (
	ErrNoAgent   = errors.New("no MeshAgent")
	ErrAmbiguous = errors.New("names several MeshAgents")
)

// Quarantine returns the quarantine state the MeshAgents' spec.quarantine
// give, as of the last WatchQuarantine step (Start computes the first).
func (s *Source) Quarantine() *quarantine.State {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.qcur
}

// WatchQuarantine recomputes the quarantine state after every change of a
// MeshAgent, Pod or ServiceAccount (without debounce: a quarantine is
// applied as soon as it is seen) and calls apply with every state that
// differs from the last, one call at a time, until ctx ends. Start first.
func (s *Source) WatchQuarantine(ctx context.Context, apply func(*quarantine.State)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.qkick:
		}
		s.qmu.Lock()
		prev := s.qcur
		st := s.quarantineState(prev, time.Now())
		same := reflect.DeepEqual(prev.Quarantined, st.Quarantined)
		if !same {
			s.qcur = st
		}
		s.qmu.Unlock()
		if !same {
			apply(st)
		}
	}
}

func (s *Source) pokeQuarantine() {
	select {
	case s.qkick <- struct{}{}:
	default:
	}
}

// quarantineState builds the state from the informers' contents: one
// entry per SPIFFE ID of a MeshAgent with spec.quarantine, and a release
// for each ID of prev no longer quarantined.
func (s *Source) quarantineState(prev *quarantine.State, now time.Time) *quarantine.State {
	var pods []*corev1.Pod
	for _, obj := range s.pods.GetStore().List() {
		if p, ok := obj.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	agents := map[string]*unstructured.Unstructured{} // namespace/name
	var quarantined []*v1alpha1.MeshAgent
	for _, obj := range s.crds[MeshAgents].GetStore().List() {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		agents[u.GetNamespace()+"/"+u.GetName()] = u
		if _, has, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "quarantine"); !has {
			continue
		}
		var ma v1alpha1.MeshAgent
		if err := fromUnstructured(u, &ma); err != nil {
			// The API server validated it against the CRD's schema; an
			// object that does not convert still quarantines what its
			// status names.
			ma = v1alpha1.MeshAgent{ObjectMeta: metav1.ObjectMeta{Namespace: u.GetNamespace(), Name: u.GetName(),
				ManagedFields: u.GetManagedFields(), CreationTimestamp: u.GetCreationTimestamp()}}
			ma.Status.SPIFFEID, _, _ = unstructured.NestedString(u.Object, "status", "spiffeID")
			ma.Spec.Quarantine = &v1alpha1.Quarantine{Reason: "(spec does not parse: " + err.Error() + ")"}
		}
		quarantined = append(quarantined, &ma)
	}
	st := buildQuarantine(s.base.TrustDomain, quarantined, pods)
	if prev != nil {
		st.Released = slices.Clone(prev.Released)
		for _, e := range prev.Quarantined {
			if _, still := st.Find(e.SPIFFEID); still {
				continue
			}
			st.Released = append(st.Released, releaseOf(e, agents[e.Agent], now))
		}
		if n := len(st.Released) - maxReleased; n > 0 {
			st.Released = slices.Delete(st.Released, 0, n)
		}
	}
	return st
}

// buildQuarantine is the state of the quarantined MeshAgents. An agent's
// SPIFFE IDs are, failing closed, every one it may serve under: that of
// spec.serviceAccountName, those of the ServiceAccounts of the pods its
// selector selects, and the one its status names (the last one served),
// whether or not the agent is valid. Each ID is entered once, for the
// first agent (by namespace/name) that names it.
func buildQuarantine(td string, quarantined []*v1alpha1.MeshAgent, pods []*corev1.Pod) *quarantine.State {
	slices.SortFunc(quarantined, func(a, b *v1alpha1.MeshAgent) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	st := &quarantine.State{Version: quarantine.Version, Quarantined: []quarantine.Entry{}}
	for _, ma := range quarantined {
		q := ma.Spec.Quarantine
		e := quarantine.Entry{Reason: q.Reason, By: q.By, Agent: ma.Namespace + "/" + ma.Name}
		mgr, at := quarantineManager(ma.ManagedFields)
		switch {
		case q.Since != nil:
			e.At = q.Since.UTC()
		case !at.IsZero():
			e.At = at.UTC()
		default:
			e.At = ma.CreationTimestamp.UTC()
		}
		if e.By == "" {
			e.By = "unknown (spec.quarantine set by field manager " + orUnknown(mgr) + ")"
		}
		for _, id := range agentIDs(td, ma, pods) {
			if _, dup := st.Find(id); dup {
				continue
			}
			e.SPIFFEID = id
			st.Quarantined = append(st.Quarantined, e)
		}
	}
	slices.SortFunc(st.Quarantined, func(a, b quarantine.Entry) int { return strings.Compare(a.SPIFFEID, b.SPIFFEID) })
	return st
}

func agentIDs(td string, ma *v1alpha1.MeshAgent, pods []*corev1.Pod) []string {
	var ids []string
	add := func(id string) {
		if strings.HasPrefix(id, "spiffe://"+td+"/") && !envoy.IsReservedSPIFFEID(id) && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	of := func(sa string) string { return "spiffe://" + td + "/ns/" + ma.Namespace + "/sa/" + sa }
	if sa := ma.Spec.ServiceAccountName; sa != "" {
		add(of(sa))
	}
	if sel, err := metav1.LabelSelectorAsSelector(&ma.Spec.Selector); err == nil && !sel.Empty() {
		for _, p := range pods {
			if p.Namespace != ma.Namespace || !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			add(of(sa))
		}
	}
	add(ma.Status.SPIFFEID)
	slices.Sort(ids)
	return ids
}

// quarantineManager is the field manager that owns spec.quarantine, and
// when it last wrote.
func quarantineManager(mf []metav1.ManagedFieldsEntry) (string, time.Time) {
	for _, f := range mf {
		if f.FieldsV1 == nil || f.Subresource != "" {
			continue
		}
		var fields struct {
			Spec map[string]json.RawMessage `json:"f:spec"`
		}
		if json.Unmarshal(f.FieldsV1.GetRawBytes(), &fields) != nil {
			continue
		}
		if _, ok := fields.Spec["f:quarantine"]; ok {
			var at time.Time
			if f.Time != nil {
				at = f.Time.Time
			}
			return f.Manager, at
		}
	}
	return "", time.Time{}
}

// lastManager is the field manager that last wrote the object (not its
// status).
func lastManager(mf []metav1.ManagedFieldsEntry) string {
	var m string
	var at time.Time
	for _, f := range mf {
		if f.Subresource != "" || f.Time == nil {
			continue
		}
		if m == "" || !f.Time.Before(&metav1.Time{Time: at}) {
			m, at = f.Manager, f.Time.Time
		}
	}
	return m
}

// releaseOf is the release of e: by whom the MeshAgent's annotations
// say, else as much as the object tells.
func releaseOf(e quarantine.Entry, u *unstructured.Unstructured, now time.Time) quarantine.Entry {
	r := quarantine.Entry{SPIFFEID: e.SPIFFEID, Agent: e.Agent, At: now.UTC()}
	switch {
	case u == nil:
		r.By = "unknown (MeshAgent " + e.Agent + " deleted)"
	case u.GetAnnotations()[AnnotationReleasedBy] != "":
		r.By = u.GetAnnotations()[AnnotationReleasedBy]
		if at, err := time.Parse(time.RFC3339Nano, u.GetAnnotations()[AnnotationReleasedAt]); err == nil {
			r.At = at.UTC()
		}
	default:
		r.By = "unknown (spec.quarantine removed; the last field manager is " + orUnknown(lastManager(u.GetManagedFields())) + ")"
	}
	return r
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// Editor sets and removes MeshAgents' spec.quarantine through the API
// server: `meshward quarantine`/`release`, the admin API and detection in
// Kubernetes mode. Every replica's Source then applies it.
type Editor struct {
	dyn         dynamic.Interface
	trustDomain string
}

// NewEditor returns an Editor of the MeshAgents dyn reaches, whose SPIFFE
// IDs are of trustDomain.
func NewEditor(dyn dynamic.Interface, trustDomain string) *Editor {
	return &Editor{dyn: dyn, trustDomain: trustDomain}
}

// Editor returns an Editor on the Source's cluster.
func (s *Source) Editor() *Editor { return NewEditor(s.dyn, s.base.TrustDomain) }

// Edited is what an edit changed.
type Edited struct {
	// Agents are the MeshAgents patched (namespace/name).
	Agents []string
	// SPIFFEID is the identity asked for, or the first agent's.
	SPIFFEID string
}

// Quarantine sets spec.quarantine of the MeshAgents arg names: NAME (the
// one MeshAgent of that name in any namespace), NAMESPACE/NAME, or a
// SPIFFE ID (every MeshAgent serving it). Agents already quarantined are
// left as they are; when all are, the error wraps quarantine.ErrNoChange.
func (e *Editor) Quarantine(ctx context.Context, arg, reason, by string, at time.Time) (Edited, error) {
	return e.edit(ctx, arg, true, func(*unstructured.Unstructured) ([]byte, error) {
		since := metav1.NewTime(at.UTC().Truncate(time.Second))
		return json.Marshal(map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{AnnotationReleasedBy: nil, AnnotationReleasedAt: nil}},
			"spec":     map[string]any{"quarantine": v1alpha1.Quarantine{Reason: reason, By: by, Since: &since}},
		})
	})
}

// Release removes spec.quarantine of the MeshAgents arg names, recording
// by in their annotations; when none is quarantined, the error wraps
// quarantine.ErrNoChange.
func (e *Editor) Release(ctx context.Context, arg, by string, at time.Time) (Edited, error) {
	return e.edit(ctx, arg, false, func(*unstructured.Unstructured) ([]byte, error) {
		return json.Marshal(map[string]any{
			"metadata": map[string]any{"annotations": map[string]any{
				AnnotationReleasedBy: by, AnnotationReleasedAt: at.UTC().Format(time.RFC3339Nano)}},
			"spec": map[string]any{"quarantine": nil},
		})
	})
}

// edit applies patch to the MeshAgents arg names that need it. Each
// patch carries the resourceVersion read, so it never applies to an
// object changed since (a status write, another edit); on a conflict the
// objects are read again and the edit retried.
func (e *Editor) edit(ctx context.Context, arg string, set bool, patch func(*unstructured.Unstructured) ([]byte, error)) (Edited, error) {
	var out Edited
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var err error
		out, err = e.editOnce(ctx, arg, set, patch, out.Agents)
		return err
	})
	return out, err
}

// editOnce is one try of edit; done are the agents patched by earlier tries.
func (e *Editor) editOnce(ctx context.Context, arg string, set bool, patch func(*unstructured.Unstructured) ([]byte, error), done []string) (Edited, error) {
	targets, id, err := e.find(ctx, arg)
	if err != nil {
		return Edited{Agents: done}, err
	}
	out := Edited{SPIFFEID: id, Agents: done}
	for _, u := range targets {
		_, has, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "quarantine")
		if has == set {
			continue
		}
		body, err := patch(u)
		if err != nil {
			return out, fmt.Errorf("kubernetes: %w", err)
		}
		// The resourceVersion makes the patch fail rather than apply to
		// an object changed since it was read.
		body = withResourceVersion(body, u.GetResourceVersion())
		if _, err := e.dyn.Resource(MeshAgents).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.MergePatchType, body,
			metav1.PatchOptions{FieldManager: "meshward-quarantine"}); err != nil {
			if apierrors.IsConflict(err) {
				return out, err // retried as it is
			}
			return out, fmt.Errorf("kubernetes: MeshAgent %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		out.Agents = append(out.Agents, u.GetNamespace()+"/"+u.GetName())
	}
	if len(out.Agents) == 0 {
		state := "already quarantined"
		if !set {
			state = "not quarantined"
		}
		return out, fmt.Errorf("kubernetes: %s is %s: %w", arg, state, quarantine.ErrNoChange)
	}
	return out, nil
}

func withResourceVersion(body []byte, rv string) []byte {
	rvField, _ := json.Marshal(rv)
	return bytes.Replace(body, []byte(`"metadata":{`), []byte(`"metadata":{"resourceVersion":`+string(rvField)+`,`), 1)
}

// find lists the MeshAgents arg names, and the SPIFFE ID it means.
func (e *Editor) find(ctx context.Context, arg string) ([]*unstructured.Unstructured, string, error) {
	if ns, name, ok := strings.Cut(arg, "/"); ok && !strings.HasPrefix(arg, "spiffe://") {
		u, err := e.dyn.Resource(MeshAgents).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				return nil, "", fmt.Errorf("kubernetes: MeshAgent %s: %w", arg, ErrNoAgent)
			}
			return nil, "", fmt.Errorf("kubernetes: %w", err)
		}
		id, _, _ := unstructured.NestedString(u.Object, "status", "spiffeID")
		return []*unstructured.Unstructured{u}, id, nil
	}
	list, err := e.dyn.Resource(MeshAgents).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: %w", err)
	}
	var out []*unstructured.Unstructured
	id := ""
	for i := range list.Items {
		u := &list.Items[i]
		sid, _, _ := unstructured.NestedString(u.Object, "status", "spiffeID")
		switch {
		case strings.HasPrefix(arg, "spiffe://"):
			sa, _, _ := unstructured.NestedString(u.Object, "spec", "serviceAccountName")
			if sid == arg || (sa != "" && "spiffe://"+e.trustDomain+"/ns/"+u.GetNamespace()+"/sa/"+sa == arg) {
				out = append(out, u)
				id = arg
			}
		case u.GetName() == arg:
			out = append(out, u)
			id = sid
		}
	}
	switch {
	case len(out) == 0:
		return nil, "", fmt.Errorf("kubernetes: %q: %w of that name or SPIFFE ID (status.spiffeID, spec.serviceAccountName)", arg, ErrNoAgent)
	case len(out) > 1 && !strings.HasPrefix(arg, "spiffe://"):
		var names []string
		for _, u := range out {
			names = append(names, u.GetNamespace()+"/"+u.GetName())
		}
		return nil, "", fmt.Errorf("kubernetes: %q %w (%s): give NAMESPACE/NAME", arg, ErrAmbiguous, strings.Join(names, ", "))
	}
	return out, id, nil
}
