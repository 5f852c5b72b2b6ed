package kube_test

import (
	"context"
	"testing"
	"testing/fstest"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/cmd/meshward/internal/kube"
	"github.com/meshward/meshward/cmd/meshward/internal/kube/api/v1alpha1"
	"github.com/meshward/meshward/policy"
)

const leaseName = "meshward"

// testLease: short enough for a test (the Lease records whole seconds).
func testLease(id string) kube.Lease {
	return kube.Lease{Namespace: "default", Name: leaseName, Identity: id,
		Duration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond}
}

// replica is a Source with a Lease, run until stop.
type replica struct {
	src  *kube.Source
	gens <-chan *config.Config
	stop func() // ends Run and waits for it (the Lease released)
}

func startReplica(t *testing.T, ctx context.Context, rc *rest.Config, id string) *replica {
	t.Helper()
	src := newSource(t, rc, kube.WithLease(testLease(id)))
	rctx, cancel := context.WithCancel(ctx)
	if err := src.Start(rctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan *config.Config, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(rctx, func(context.Context) {
			if c, err := src.Load(); err == nil {
				select {
				case ch <- c:
				default: // the test reads only the ones it waits for
				}
			}
		})
	}()
	stop := func() {
		cancel()
		<-done
	}
	t.Cleanup(stop)
	return &replica{src: src, gens: ch, stop: stop}
}

func (c *cluster) holder(t *testing.T, ctx context.Context) string {
	t.Helper()
	l, err := c.core.CoordinationV1().Leases("default").Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// poll waits until ok or the deadline of ctx.
func poll(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("never: %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestLeaseOnlyHolderWritesStatus: a replica that does not hold the Lease
// builds and serves generations but writes no status; when the holder
// lets the Lease go, the replica takes it and writes the status it owes.
func TestLeaseOnlyHolderWritesStatus(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Another replica holds the Lease (for an hour, unless it lets go).
	other, hour, now := "other", int32(3600), metav1.NewMicroTime(time.Now())
	if _, err := c.core.CoordinationV1().Leases("default").Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: leaseName},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &other, LeaseDurationSeconds: &hour, AcquireTime: &now, RenewTime: &now},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	r := startReplica(t, ctx, c.rc, "b")
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("r1", "default", v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "one", Match: v1alpha1.Match{Path: "/one"}}}}))
	// The generation is built and handed on after its status writes, so
	// once it is here a write would have been made.
	next(t, ctx, r.gens, "rule one", func(c *config.Config) bool { return ruleNames(c) == "one" })
	if r.src.Leading() {
		t.Fatal("leading while another replica holds the Lease")
	}
	if cond := c.accepted(t, ctx, kube.AuthorizationRules, "default", "r1"); cond != nil {
		t.Fatalf("a replica without the Lease wrote status: %+v", cond)
	}

	// The holder lets go, as client-go's release does.
	l, err := c.core.CoordinationV1().Leases("default").Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	empty, one := "", int32(1)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds = &empty, &one
	if _, err := c.core.CoordinationV1().Leases("default").Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "b holds the Lease", func() bool { return c.holder(t, ctx) == "b" && r.src.Leading() })
	c.waitCondition(t, ctx, kube.AuthorizationRules, "default", "r1", metav1.ConditionTrue)
}

// TestLeaseMovesWhenTheHolderStops: of two replicas one takes the Lease
// and writes status; when it stops (and releases the Lease) the other
// takes it and writes the status of what changes next.
func TestLeaseMovesWhenTheHolderStops(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	reps := map[string]*replica{"a": startReplica(t, ctx, c.rc, "a"), "b": startReplica(t, ctx, c.rc, "b")}
	var first string
	poll(t, ctx, "a replica holds the Lease", func() bool {
		first = c.holder(t, ctx)
		return reps[first] != nil && reps[first].src.Leading()
	})
	second := map[string]string{"a": "b", "b": "a"}[first]
	if reps[second].src.Leading() {
		t.Fatalf("%s leads beside the holder %s", second, first)
	}
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("r1", "default", v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "one", Match: v1alpha1.Match{Path: "/one"}}}}))
	c.waitCondition(t, ctx, kube.AuthorizationRules, "default", "r1", metav1.ConditionTrue)

	reps[first].stop()
	if reps[first].src.Leading() {
		t.Fatalf("%s still leads after it stopped", first)
	}
	poll(t, ctx, second+" takes the Lease", func() bool { return c.holder(t, ctx) == second && reps[second].src.Leading() })
	c.create(t, ctx, kube.AuthorizationRules, ruleObj("r2", "default", v1alpha1.AuthorizationRuleSpec{
		Rules: []v1alpha1.Rule{{Name: "one", Match: v1alpha1.Match{Path: "/again"}}}})) // a clash: Accepted=False
	cond := c.waitCondition(t, ctx, kube.AuthorizationRules, "default", "r2", metav1.ConditionFalse)
	if cond.Reason != v1alpha1.ReasonInvalid {
		t.Errorf("r2 condition %s %q", cond.Reason, cond.Message)
	}
}

// TestLeaseRefusesBadDurations: what client-go would refuse at Run, and a
// duration the Lease cannot record, are refused by New.
func TestLeaseRefusesBadDurations(t *testing.T) {
	rc := &rest.Config{Host: "https://127.0.0.1:1"}
	base, err := config.Parse([]byte(baseYAML), fstest.MapFS{}, "base.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]kube.Lease{
		"no name":            {Namespace: "default", Identity: "a"},
		"no identity":        {Namespace: "default", Name: "m"},
		"under a second":     {Namespace: "default", Name: "m", Identity: "a", Duration: 900 * time.Millisecond, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond},
		"renew past expiry":  {Namespace: "default", Name: "m", Identity: "a", Duration: 5 * time.Second, RenewDeadline: 5 * time.Second},
		"retry past renewal": {Namespace: "default", Name: "m", Identity: "a", RenewDeadline: 2 * time.Second, RetryPeriod: 2 * time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := kube.New(rc, base, policy.Options{}, kube.WithLease(l)); err == nil {
				t.Error("accepted")
			}
		})
	}
}
