package secrets

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the secrets package's Prometheus metrics. Build them once
// with NewMetrics and give the same value to every part (WithMetrics).
type Metrics struct {
	certExpiry      *prometheus.GaugeVec
	issuance        *prometheus.CounterVec
	vaultDuration   *prometheus.HistogramVec
	vaultLogin      *prometheus.CounterVec
	vaultRenewal    *prometheus.CounterVec
	kvDeleted       *prometheus.GaugeVec
	bundleRoots     prometheus.Gauge
	secretPollError *prometheus.CounterVec
}

// Issuance results (label `result` of meshward_secrets_issuance_total).
const (
	resultSuccess  = "success"
	resultError    = "error"
	resultRejected = "rejected"
)

// NewMetrics creates the metrics and registers them on reg (nil: not
// registered anywhere, still usable).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshward_secrets_cert_expiry_timestamp_seconds",
			Help: "Expiry (Unix seconds) of the certificate currently served for each SPIFFE ID.",
		}, []string{"spiffe_id"}),
		issuance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_secrets_issuance_total",
			Help: "Certificate issuances by result: success, error (source failed), rejected (failed the checks).",
		}, []string{"result"}),
		vaultDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshward_secrets_vault_request_duration_seconds",
			Help:    "Latency of Vault requests by operation.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"op"}),
		vaultLogin: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_secrets_vault_login_total",
			Help: "Vault logins by result: success, failure.",
		}, []string{"result"}),
		vaultRenewal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_secrets_vault_renewal_total",
			Help: "Vault token renewals by result: success, ended (re-login follows), failure.",
		}, []string{"result"}),
		kvDeleted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshward_secrets_kv_deleted",
			Help: "1 while a configured KV secret is deleted in Vault and its last value is still served (alert on it).",
		}, []string{"name"}),
		bundleRoots: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshward_secrets_bundle_roots",
			Help: "Number of root certificates in the served trust bundle.",
		}),
		secretPollError: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshward_secrets_poll_errors_total",
			Help: "Failed polls of the trust bundle (what=bundle) or a generic secret (what=secret).",
		}, []string{"what"}),
	}
	// Known label values start at 0, so that rate() and absent-series
	// alerts work before the first occurrence (Prometheus practice).
	for _, r := range []string{resultSuccess, resultError, resultRejected} {
		m.issuance.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.vaultLogin.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure", "ended"} {
		m.vaultRenewal.WithLabelValues(r)
	}
	for _, w := range []string{"bundle", "secret"} {
		m.secretPollError.WithLabelValues(w)
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.certExpiry, m.issuance, m.vaultDuration, m.vaultLogin, m.vaultRenewal, m.kvDeleted, m.bundleRoots, m.secretPollError} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmtErr("register metrics", err)
	}
	return m, nil
}

func discardMetrics() *Metrics {
	m, _ := NewMetrics(nil)
	return m
}
