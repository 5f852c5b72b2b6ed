package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease is the coordination.k8s.io Lease the replicas elect the one that
// writes status with. Every replica builds the generations and serves
// them; only the holder of the Lease writes the objects' status.
type Lease struct {
	// Namespace and Name of the Lease object (created when missing).
	Namespace, Name string
	// Identity is this replica's, unique among the replicas (serve: the
	// host name and a random suffix).
	Identity string
	// Duration a non-holder waits after the last renewal before it takes
	// the Lease (default 15 s); RenewDeadline how long the holder retries
	// renewing before it stops writing (default 10 s); RetryPeriod the
	// wait between tries (default 2 s). client-go's defaults.
	Duration, RenewDeadline, RetryPeriod time.Duration
}

// Defaults of Lease's durations (client-go's).
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// WithLease makes the Source write status only while it holds l (default:
// no election, the Source always writes status: one replica).
func WithLease(l Lease) Option {
	return func(s *Source) {
		if l.Duration == 0 {
			l.Duration = DefaultLeaseDuration
		}
		if l.RenewDeadline == 0 {
			l.RenewDeadline = DefaultRenewDeadline
		}
		if l.RetryPeriod == 0 {
			l.RetryPeriod = DefaultRetryPeriod
		}
		s.lease = &l
	}
}

// Leading reports whether this Source writes status: it holds the Lease,
// or it was made without one.
func (s *Source) Leading() bool { return s.lease == nil || s.leading.Load() }

func (l *Lease) validate() error {
	var errs []error
	if l.Namespace == "" || l.Name == "" {
		errs = append(errs, errors.New("lease: namespace and name are required"))
	}
	if l.Identity == "" {
		errs = append(errs, errors.New("lease: identity is required"))
	}
	// The Lease records whole seconds: under one it would never hold.
	if l.Duration < time.Second {
		errs = append(errs, fmt.Errorf("lease: duration %v is under a second", l.Duration))
	}
	// client-go's own checks, said before anything runs.
	if l.Duration <= l.RenewDeadline {
		errs = append(errs, fmt.Errorf("lease: duration %v must be longer than the renew deadline %v", l.Duration, l.RenewDeadline))
	}
	if float64(l.RenewDeadline) <= leaderelection.JitterFactor*float64(l.RetryPeriod) {
		errs = append(errs, fmt.Errorf("lease: renew deadline %v must be longer than %.1f x the retry period %v", l.RenewDeadline, leaderelection.JitterFactor, l.RetryPeriod))
	}
	return errors.Join(errs...)
}

// elect stands for the Lease until ctx ends: while it holds it, Leading
// is true and the first status write is asked for; when it loses it (it
// could not renew in time), it stands again. On ctx's end it releases the
// Lease, so another replica takes it at once rather than after Duration.
func (s *Source) elect(ctx context.Context) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: s.lease.Namespace, Name: s.lease.Name},
		Client:     s.core.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.lease.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            s.lease.Namespace + "/" + s.lease.Name,
			LeaseDuration:   s.lease.Duration,
			RenewDeadline:   s.lease.RenewDeadline,
			RetryPeriod:     s.lease.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) {
					s.leading.Store(true)
					s.log.Info("kubernetes: holding the lease: this replica writes status", "lease", lock.Describe(), "identity", s.lease.Identity)
					select {
					case s.led <- struct{}{}:
					default:
					}
				},
				OnStoppedLeading: func() {
					if s.leading.Swap(false) {
						s.log.Info("kubernetes: lease lost or released: this replica no longer writes status", "lease", lock.Describe(), "identity", s.lease.Identity)
					}
				},
				OnNewLeader: func(id string) {
					s.log.Info("kubernetes: status writer", "lease", lock.Describe(), "holder", id)
				},
			},
		})
		if err != nil { // validate said it first; kept for client-go's checks to come
			s.log.Error("kubernetes: leader election not started; this replica does not write status", "error", err)
			return
		}
		le.Run(ctx)
	}
}
