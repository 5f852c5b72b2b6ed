package secrets

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff is capped exponential backoff with jitter: the n-th delay is
// drawn uniformly from [d/2, d] where d = min * 2^n, capped at max.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := backoffDelay(b.min, b.max, b.n)
	b.n++
	return d
}

func (b *backoff) reset() { b.n = 0 }

func backoffDelay(minimum, maximum time.Duration, attempt int) time.Duration {
	d := minimum
	for i := 0; i < attempt && d < maximum; i++ {
		d *= 2
	}
	d = min(d, maximum)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1)) //nolint:gosec // G404: retry jitter, not a secret
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
