package secrets

import (
	"fmt"
	"log/slog"
	"time"
)

// EventSink receives security events: Vault login and renewal failures,
// issuance failures and rejected certificates. The lead wires it to the
// audit log. Implementations must be safe for concurrent use and must not
// block for long.
type EventSink interface {
	SecurityEvent(kind, message string, attrs ...slog.Attr)
}

// Security event kinds.
const (
	EventVaultLogin    = "secrets.vault_login_failed"
	EventVaultRenewal  = "secrets.vault_renewal_failed"
	EventIssuance      = "secrets.issuance_failed"
	EventCertRejected  = "secrets.certificate_rejected"
	EventSecretDeleted = "secrets.kv_secret_deleted" //nolint:gosec // G101: an event kind name, not a credential
)

// Log field names.
const (
	logID      = "spiffe_id"
	logErr     = "error"
	logName    = "secret"
	logAttempt = "attempt"
	logRetryIn = "retry_in"
	logMethod  = "auth_method"
	logExpiry  = "not_after"
	logRoots   = "roots"
)

// Option configures LocalCA, Vault and Manager. Options that do not apply
// to a type are ignored by it.
type Option func(*options)

type options struct {
	log          *slog.Logger
	metrics      *Metrics
	events       EventSink
	now          func() time.Time
	pollInterval time.Duration
	issueRate    float64
	maxBackoff   time.Duration
	minBackoff   time.Duration
	workers      int
}

func buildOptions(opts []Option) options {
	o := options{
		log:          slog.New(slog.DiscardHandler),
		now:          time.Now,
		pollInterval: DefaultPollInterval,
		minBackoff:   500 * time.Millisecond,
		maxBackoff:   time.Minute,
		workers:      4,
	}
	for _, f := range opts {
		f(&o)
	}
	if o.metrics == nil {
		o.metrics = discardMetrics()
	}
	return o
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithMetrics sets the metrics (see NewMetrics). Default: unregistered.
func WithMetrics(m *Metrics) Option { return func(o *options) { o.metrics = m } }

// WithEventSink sets where security events go. Default: nowhere.
func WithEventSink(s EventSink) Option { return func(o *options) { o.events = s } }

// WithPollInterval sets how often the Manager polls the trust bundle and
// generic secrets. Default 30s.
func WithPollInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.pollInterval = d
		}
	}
}

// WithIssueRate caps the Manager's issuance, per second. Default: no cap
// (the local CA); New sets secrets.vault.issueRate for Vault.
func WithIssueRate(perSecond float64) Option { return func(o *options) { o.issueRate = perSecond } }

// WithBackoff sets the Manager's retry backoff bounds after a failed
// issuance. Default 500ms doubling up to 1m, with jitter.
func WithBackoff(minimum, maximum time.Duration) Option {
	return func(o *options) {
		if minimum > 0 && maximum >= minimum {
			o.minBackoff, o.maxBackoff = minimum, maximum
		}
	}
}

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option {
	return func(o *options) {
		if now != nil {
			o.now = now
		}
	}
}

func (o *options) event(kind, msg string, attrs ...slog.Attr) {
	if o.events != nil {
		o.events.SecurityEvent(kind, msg, attrs...)
	}
}

func fmtErr(op string, err error) error { return fmt.Errorf("%s: %w", op, err) }
