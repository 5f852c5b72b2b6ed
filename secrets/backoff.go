package secrets

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// newBackoff is capped exponential backoff with jitter (cenkalti/backoff):
// the delays start at minimum and double up to maximum, each drawn from
// half to one and a half of its step, so that replicas and identities that
// failed together do not retry together.
func newBackoff(minimum, maximum time.Duration) *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{
		InitialInterval:     minimum,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         maximum,
	}
}

// renewAt is when a certificate received at issued and expiring at
// notAfter is re-issued: at half of its remaining life, plus or minus
// 10 % of that life (u, uniform in [0, 1), chooses where), so that
// identities issued together do not all renew together.
func renewAt(issued, notAfter time.Time, u float64) time.Time {
	life := notAfter.Sub(issued)
	if life <= 0 {
		return issued
	}
	frac := 0.5 + (2*u-1)*0.1
	return issued.Add(time.Duration(float64(life) * frac))
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
