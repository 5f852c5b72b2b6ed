package main

import (
	"context"
	"log/slog"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

// secretsKinds maps the secrets package's event names to audit kinds.
var secretsKinds = map[string]string{
	secrets.EventVaultLogin:    audit.KindVaultAuthFailure,
	secrets.EventVaultRenewal:  audit.KindVaultAuthFailure,
	secrets.EventIssuance:      audit.KindCertIssueFailure,
	secrets.EventCertRejected:  audit.KindCertIssueFailure,
	secrets.EventSecretDeleted: secrets.EventSecretDeleted,
}

// secretsEvents records the secrets source's security events in the
// audit stream (secrets.EventSink).
type secretsEvents struct{ log *audit.Logger }

func (e secretsEvents) SecurityEvent(kind, message string, attrs ...slog.Attr) {
	k, ok := secretsKinds[kind]
	if !ok {
		k = kind
	}
	e.log.SecurityEvent(k, message, append(attrs, slog.String("event", kind))...)
}

// xdsEvents records refused subscriptions and NACKs in the audit stream
// (xds.EventSink).
type xdsEvents struct{ log *audit.Logger }

func (e xdsEvents) SecurityEvent(_ context.Context, ev xds.SecurityEvent) {
	kind := audit.KindXDSRefused
	if ev.Kind == xds.EventNACK {
		kind = audit.KindXDSNack
	}
	detail := map[string]string{}
	for k, v := range map[string]string{"remote": ev.Remote, "version": ev.Version, "detail": ev.Detail} {
		if v != "" {
			detail[k] = v
		}
	}
	// A refused record is counted by the audit logger as lost; the xDS
	// server has already logged and counted the event itself.
	_ = e.log.Audit(&audit.Record{Kind: kind, Time: ev.Time, Reason: ev.Reason, Node: ev.Node,
		Principal: ev.PeerID, Type: ev.Type, Detail: detail})
}
