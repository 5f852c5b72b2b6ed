package extauthz

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets/mtls"
)

// Decider decides canonical requests; policy.Store is one. Decide must
// never fail open: internal failures are a deny with Err set.
type Decider interface {
	Decide(ctx context.Context, in *policy.Input) policy.Decision
	// RevisionID is the policy revision served, "" while none is loaded
	// (the server is not ready and denies every request until then).
	RevisionID() string
}

// Auditor records decisions. An error means the decision could not be
// recorded: the request is then denied with status_on_error.
type Auditor interface {
	Audit(rec *audit.Record) error
}

// Options are the optional dependencies of a Server.
type Options struct {
	// Logger, default a no-op.
	Logger *slog.Logger
	// Registry for meshward_authz_* metrics; nil registers nothing.
	Registry prometheus.Registerer
	// Auditor records every decision; nil records nothing.
	Auditor Auditor
	// AuditHeaders are the request headers copied into audit records (by
	// name, case-insensitive), e.g. those audit.redaction.headers digests;
	// no other header, and no pseudo-header, is recorded. Default none.
	AuditHeaders []string
	// ReadFile reads the TLS files; default os.ReadFile.
	ReadFile func(name string) ([]byte, error)
	// SVIDSource and BundleSource provide the listener's X.509 SVID and
	// the trust bundle its clients' SVIDs must chain to when
	// Config.TLS.FromSecrets is set (Listen fails without them; an
	// in-process Server that never listens does not need them). Both are
	// asked at every handshake, so rotations apply to new connections
	// without a restart.
	SVIDSource   x509svid.Source
	BundleSource x509bundle.Source
}

// ServiceName is the gRPC service (and health service name) served.
const ServiceName = "envoy.service.auth.v3.Authorization"

// DryRunHeader is set on requests a dry-run allowed, to the reason code
// of the deny that would have happened.
const DryRunHeader = "x-meshward-dry-run"

// Server is the ext_authz gRPC server. Its Check method is safe for
// concurrent use and can be called in-process (meshward check).
type Server struct {
	authv3.UnimplementedAuthorizationServer

	cfg     Config
	td      spiffeid.TrustDomain
	decider Decider
	auditor Auditor
	// auditBody: the auditor writes bodies, so records carry the parsed
	// body (converted from the schema step's tape only then).
	auditBody bool
	// auditHeaders are lowercase names of the headers audit records copy.
	auditHeaders []string
	log          *slog.Logger
	m            *metrics
	health       *health.Server
	// readFile reads TLS files.
	readFile func(string) ([]byte, error)
	// svids and bundles serve the listener's TLS when cfg.TLS.FromSecrets.
	svids   x509svid.Source
	bundles x509bundle.Source

	// identityHeaders may not be repeated; removal lists by which of the
	// roles and dry-run headers are set on the response.
	identityHeaders []string
	remove          [2][2][]string

	idPrefix string
	seq      atomic.Uint64
	certs    certCache
	parts    responseParts

	// refusals counts and logs connections refused before any Check.
	refusals *mtls.RefusalLog
	// failLog and failAuditLog rate-limit the warnings of failed Checks:
	// a failing audit sink or a storm of cancelled Checks fails every
	// request, and each is already counted in meshward_authz_errors_total.
	failLog, failAuditLog rate.Sometimes

	// quarantine is the set of quarantined identities, checked before policy.
	quarantine quarantineHolder

	mu       sync.Mutex
	listener net.Listener
	grpc     *grpc.Server
	serving  atomic.Bool
}

// New builds a server for cfg (defaults applied to a copy, then
// validated) that authenticates callers of trustDomain and asks d.
func New(cfg Config, trustDomain string, d Decider, opts Options) (*Server, error) {
	cfg.SetDefaults()
	if err := cfg.Validate("authz"); err != nil {
		return nil, fmt.Errorf("extauthz: %w", err)
	}
	if d == nil {
		return nil, errors.New("extauthz: a decider is required")
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("extauthz: trust domain: %w", err)
	}
	m, err := newMetrics(opts.Registry)
	if err != nil {
		return nil, fmt.Errorf("extauthz: metrics: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var prefix [8]byte
	if _, err := rand.Read(prefix[:]); err != nil {
		return nil, fmt.Errorf("extauthz: decision id: %w", err)
	}
	s := &Server{
		cfg: cfg, td: td, decider: d, auditor: opts.Auditor, log: log, m: m,
		idPrefix: hex.EncodeToString(prefix[:]) + "-",
		failLog:  rate.Sometimes{Interval: failLogInterval}, failAuditLog: rate.Sometimes{Interval: failLogInterval},
	}
	if opts.Auditor != nil {
		s.auditBody = true // unless the auditor says it drops bodies
		if b, ok := opts.Auditor.(interface{ IncludesBody() bool }); ok {
			s.auditBody = b.IncludesBody()
		}
	}
	for _, h := range opts.AuditHeaders {
		if !strings.HasPrefix(h, ":") { // :path would carry the query audit drops
			s.auditHeaders = append(s.auditHeaders, strings.ToLower(h))
		}
	}
	s.certs.m.max = maxCachedCerts
	s.parts.principals.max = maxCachedParts
	s.parts.rules.max = maxCachedParts
	s.identityHeaders = append([]string{"authorization", cfg.Headers.Principal, cfg.Headers.Roles}, cfg.Headers.Remove...)
	for roles := range 2 {
		for dry := range 2 {
			l := append([]string(nil), cfg.Headers.Remove...)
			if roles == 0 {
				l = append(l, cfg.Headers.Roles)
			}
			if dry == 0 {
				l = append(l, DryRunHeader)
			}
			s.remove[roles][dry] = l
		}
	}
	s.refusals = mtls.NewRefusalLog(log, func(reason string) { m.refused.WithLabelValues(reason).Inc() }, mtls.RefusalMessages{
		Limit:   "ext_authz connection refused: maxConnections reached (further refusals are counted in meshward_authz_refused_connections_total, logged at most every 10s)",
		Aborted: "ext_authz TLS handshake aborted by the client",
		Failed:  "ext_authz TLS handshake failed; connection refused (further failures are counted in meshward_authz_refused_connections_total, logged at most every 10s)",
	})
	s.readFile, s.svids, s.bundles = opts.ReadFile, opts.SVIDSource, opts.BundleSource
	if s.readFile == nil {
		s.readFile = os.ReadFile
	}
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	return s, nil
}

// newGRPC builds the gRPC server: credentials, limits, keepalive, and the
// Authorization, health and (optionally) reflection services.
func (s *Server) newGRPC() (*grpc.Server, error) {
	creds := insecure.NewCredentials()
	switch {
	case s.cfg.Plaintext:
	case s.cfg.TLSFromSecrets():
		if s.svids == nil || s.bundles == nil {
			return nil, errors.New("extauthz: tls: authz.tls.fromSecrets needs a TLS source (SVIDSource and BundleSource)")
		}
		creds = mtls.RefusingCreds(credentials.NewTLS(s.sourceTLS()), s.refusals.Refuse)
	default:
		tc, err := serverTLS(s.cfg.TLS, s.readFile, s.log)
		if err != nil {
			return nil, fmt.Errorf("extauthz: tls: %w", err)
		}
		creds = mtls.RefusingCreds(credentials.NewTLS(tc), s.refusals.Refuse)
	}
	g := grpc.NewServer(append([]grpc.ServerOption{grpc.Creds(creds)}, serverOptions(s.cfg)...)...)
	authv3.RegisterAuthorizationServer(g, s)
	healthpb.RegisterHealthServer(g, s.health)
	if s.cfg.Reflection {
		reflection.Register(g)
	}
	return g, nil
}

// tlsFiles serves the listener's TLS material, re-reading the files on
// every handshake so that rotated certificates are picked up without a
// restart; a read or parse failure keeps the last good material.
type tlsFiles struct {
	files    *TLSFiles
	readFile func(string) ([]byte, error)
	log      *slog.Logger

	mu   sync.Mutex
	raw  [3][]byte
	conf *tls.Config
}

func (t *tlsFiles) load() (*tls.Config, error) {
	var raw [3][]byte
	for i, name := range []string{t.files.CertFile, t.files.KeyFile, t.files.CAFile} {
		b, err := t.readFile(name)
		if err != nil {
			return nil, err
		}
		raw[i] = b
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conf != nil && bytes.Equal(raw[0], t.raw[0]) && bytes.Equal(raw[1], t.raw[1]) && bytes.Equal(raw[2], t.raw[2]) {
		return t.conf, nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[2]) {
		return nil, fmt.Errorf("%s: no CA certificate found", t.files.CAFile)
	}
	t.raw = raw
	t.conf = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
		CipherSuites: aeadSuites,
	}
	return t.conf, nil
}

func (t *tlsFiles) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	conf, err := t.load()
	if err != nil {
		t.log.Warn("ext_authz TLS files unreadable; serving the last good ones", logError, err)
		t.mu.Lock()
		defer t.mu.Unlock()
		return t.conf, nil
	}
	return conf, nil
}

// aeadSuites are the TLS 1.2 cipher suites served, the same as on the
// listeners that serve from secrets.
var aeadSuites = mtls.AEADSuites

// sourceTLS serves the SVID and verifies clients' SVIDs against the bundle
// the sources hold at each handshake, admitting members of the trust
// domain only; without material the handshake fails (never plaintext,
// never an unverified client).
func (s *Server) sourceTLS() *tls.Config {
	return mtls.ServerConfig(s.svids, s.bundles, tlsconfig.AuthorizeMemberOf(s.td), func(err error) {
		s.log.Error("ext_authz: server TLS material unavailable; refusing the connection", logError, err)
	})
}

func serverTLS(f *TLSFiles, readFile func(string) ([]byte, error), log *slog.Logger) (*tls.Config, error) {
	t := &tlsFiles{files: f, readFile: readFile, log: log}
	if _, err := t.load(); err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: aeadSuites, GetConfigForClient: t.forClient}, nil
}

// serverOptions are the gRPC server options meshward's listener uses
// besides credentials: message, header list and stream limits,
// keepalive, and the codec that encodes responses with go-control-plane's
// generated marshallers when built with -tags vtprotobuf. The load
// benchmarks serve with them too.
func serverOptions(cfg Config) []grpc.ServerOption {
	cfg.SetDefaults()
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgBytes),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgBytes),
		grpc.MaxHeaderListSize(uint32(cfg.MaxHeaderListBytes)),      //nolint:gosec // G115: validated <= 16 MiB
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)), //nolint:gosec // G115: validated <= MaxUint32
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: cfg.Keepalive.Time, Timeout: cfg.Keepalive.Timeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.Keepalive.MinTime, PermitWithoutStream: true}),
		grpc.ForceServerCodecV2(newCodec()),
	}
}

// Listen loads the TLS material and binds the configured address (so that
// Addr is known before Run).
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener != nil {
		return nil
	}
	g, err := s.newGRPC()
	if err != nil {
		return err
	}
	s.grpc = g
	l, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return fmt.Errorf("extauthz: listen: %w", err)
	}
	s.listener = mtls.LimitListener(l, s.cfg.MaxConnections, s.refusals.Refuse)
	if s.cfg.Plaintext {
		s.log.Warn(WarnPlaintext, logAddress, l.Addr().String())
	}
	s.log.Info("ext_authz server listening", logAddress, l.Addr().String(), logPlaintext, s.cfg.Plaintext)
	return nil
}

// WarnPlaintext is logged when the listener serves without TLS.
const WarnPlaintext = "EXT_AUTHZ IS SERVED IN PLAINTEXT WITHOUT CLIENT AUTHENTICATION (authz.plaintext): any process that " +
	"reaches this port can send CheckRequests claiming any identity and learn what the policy allows, and requests " +
	"(headers, bodies, JWTs) cross the network unencrypted; use only for local demos"

// Addr is the bound address, nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listener == nil {
		return nil
	}
	return s.listener.Addr()
}

// Ready reports nil once the server listens and a policy revision is
// loaded.
func (s *Server) Ready() error {
	if !s.serving.Load() {
		return errors.New("ext_authz: not serving yet")
	}
	if s.decider.RevisionID() == "" {
		return errors.New("ext_authz: no policy revision loaded")
	}
	return nil
}

// Run serves until ctx ends, then stops gracefully: in-flight Checks
// finish, bounded by the shutdown timeout.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	l, g := s.listener, s.grpc
	s.mu.Unlock()
	served := make(chan error, 1)
	go func() { served <- g.Serve(l) }()
	s.serving.Store(true)
	s.syncHealth()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-served:
			s.serving.Store(false)
			if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("extauthz: serve: %w", err)
			}
			return nil
		case <-tick.C:
			s.syncHealth()
		case <-ctx.Done():
			s.serving.Store(false)
			s.health.Shutdown()
			stopped := make(chan struct{})
			go func() { g.GracefulStop(); close(stopped) }()
			timer := time.NewTimer(s.cfg.ShutdownTimeout)
			defer timer.Stop()
			select {
			case <-stopped:
			case <-timer.C:
				s.log.Warn("ext_authz graceful stop timed out; cutting remaining checks")
				g.Stop()
				<-stopped
			}
			if err := <-served; err != nil {
				s.log.Debug("ext_authz server ended", logError, err)
			}
			return nil
		}
	}
}

// syncHealth reports SERVING exactly while a revision is loaded.
func (s *Server) syncHealth() {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if s.serving.Load() && s.decider.RevisionID() != "" {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(ServiceName, st)
}

// newDecisionID is unique per process (random prefix) and cheap.
func (s *Server) newDecisionID() string {
	var b [40]byte
	n := copy(b[:], s.idPrefix)
	return string(strconv.AppendUint(b[:n], s.seq.Add(1), 16))
}

// Input canonicalises req as Check does. ok is false when req is denied
// before policy (ambiguous request, no valid identity, quarantined); d is then that deny.
func (s *Server) Input(req *authv3.CheckRequest) (in *policy.Input, d policy.Decision, ok bool) {
	in = &policy.Input{}
	if rej := s.canonicalize(req, in); rej != nil {
		return in, rejectDecision(rej), false
	}
	if rej := s.quarantined(in); rej != nil {
		return in, rejectDecision(rej), false
	}
	return in, policy.Decision{}, true
}

func rejectDecision(rej *rejection) policy.Decision {
	return policy.Decision{Status: rej.status, Code: rej.reason, Reason: rej.reason, Message: rej.msg}
}

// Check implements the Authorization service. It never returns an error:
// every outcome, failures included, is a CheckResponse; failures deny.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (resp *authv3.CheckResponse, _ error) {
	start := time.Now()
	id := s.newDecisionID()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("ext_authz check panicked; denying", logDecisionID, id, logPanic, fmt.Sprint(r))
			s.m.errors.WithLabelValues(ReasonInternal).Inc()
			s.m.decision(resultError, ReasonInternal)
			resp = s.errorResponse(id, ReasonInternal)
		}
	}()
	// The input and the allow response's messages are allocated together.
	c := &checkMsgs{}
	in := &c.in
	defer in.ReleaseBody() // after the audit record and the response
	var d policy.Decision
	fromPolicy := false
	if rej := s.canonicalize(req, in); rej != nil {
		d = rejectDecision(rej)
	} else if rej := s.quarantined(in); rej != nil {
		d = rejectDecision(rej)
	} else {
		d = s.decider.Decide(ctx, in)
		fromPolicy = true
		if d.Err == nil && ctx.Err() != nil {
			d.Err = ctx.Err()
		}
	}
	if d.Err == nil && !d.Allow && fromPolicy && s.cfg.DryRun {
		d.Allow, d.DryRun = true, true
	}
	if d.Err == nil && s.auditor != nil {
		if err := s.auditor.Audit(s.record(id, in, &d, time.Since(start))); err != nil {
			d.Err, d.Reason = fmt.Errorf("record decision: %w", err), ReasonAudit
		}
	}
	resp = s.respond(id, in, &d, &c.allow)
	if d.RPC.Route || d.Quota != "" {
		s.m.jsonrpc(&d)
	}
	s.m.duration.Observe(time.Since(start).Seconds())
	return resp, nil
}

// checkMsgs are the per-Check values that live as long as the response.
type checkMsgs struct {
	in    policy.Input
	allow allowMsgs
}

// respond counts and logs d and shapes it into a CheckResponse (an allow
// in a's messages).
func (s *Server) respond(id string, in *policy.Input, d *policy.Decision, a *allowMsgs) *authv3.CheckResponse {
	switch {
	case d.Err != nil:
		reason := errorReason(d)
		s.m.errors.WithLabelValues(reason).Inc()
		s.m.decision(resultError, reason)
		s.logFailure(&s.failLog, slog.LevelWarn, "ext_authz check failed; denying", id, reason, d.Err)
		if s.auditor != nil && reason != ReasonAudit {
			rec := s.record(id, in, d, 0)
			rec.Kind, rec.Decision, rec.Reason, rec.Status = audit.KindDecision, resultError, reason, s.cfg.StatusOnError
			if err := s.auditor.Audit(rec); err != nil {
				s.logFailure(&s.failAuditLog, slog.LevelError, "audit of a failed check failed", id, reason, err)
			}
		}
		resp := s.errorResponse(id, reason)
		if d.RPC.Route {
			rpcInternal(resp, id, d)
		}
		return resp
	case d.Allow && d.DryRun:
		s.m.decision(resultDryRun, d.Reason)
		return s.allowResponse(a, id, in, d)
	case d.Allow:
		s.m.decision(resultAllow, d.Reason)
		return s.allowResponse(a, id, in, d)
	default:
		s.m.decision(resultDeny, d.Reason)
		if d.Status == http.StatusUnauthorized {
			s.m.authn.WithLabelValues(d.Reason).Inc()
		}
		return s.denyResponse(id, d)
	}
}

// failLogInterval is the least time between two logged Check failures
// (of each kind); the ones between are logged at debug.
const failLogInterval = 10 * time.Second

// logFailure logs a failed Check at level at most once per
// failLogInterval, and at debug otherwise, so that a failure of every
// request (a full audit disk, clients cancelling) cannot flood the log.
func (s *Server) logFailure(every *rate.Sometimes, level slog.Level, msg, id, reason string, err error) {
	logged := false
	every.Do(func() {
		logged = true
		s.log.Log(context.Background(), level, msg+" (logged at most every 10s; counted in meshward_authz_errors_total)",
			logDecisionID, id, logReason, reason, logError, err)
	})
	if !logged && s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug(msg, logDecisionID, id, logReason, reason, logError, err)
	}
}

func errorReason(d *policy.Decision) string {
	switch {
	case errors.Is(d.Err, context.DeadlineExceeded):
		return ReasonDeadline
	case errors.Is(d.Err, context.Canceled):
		return ReasonCanceled
	case d.Reason == ReasonAudit:
		return ReasonAudit
	case d.Reason != "" && d.Reason != policy.ReasonAllowed:
		return d.Reason
	default:
		return ReasonInternal
	}
}

// record is the audit record of one Check. Its kind says what happened:
// KindAuthnFailure for a request refused for its identity (401),
// KindAuthzDenial for any other deny (by policy, or a malformed request
// refused before policy), KindDecision for allows (dry-run included) and
// internal errors. Headers, claims, query and parsed body are given in
// full: the audit logger redacts or drops them as configured.
func (s *Server) record(id string, in *policy.Input, d *policy.Decision, latency time.Duration) *audit.Record {
	rec := &audit.Record{
		Kind:           audit.KindDecision,
		DecisionID:     id,
		RequestID:      in.Headers["x-request-id"],
		Principal:      in.Principal,
		Method:         in.Method,
		Host:           in.Host,
		Path:           in.Path,
		Query:          in.RawQuery,
		Rule:           d.Rule,
		Reason:         d.Reason,
		DryRun:         d.DryRun,
		Violations:     violationPaths(d.Violations),
		PolicyRevision: d.Revision,
		Latency:        latency,
		Headers:        s.selectHeaders(in.Headers),
		Claims:         in.Claims,
	}
	if rec.PolicyRevision == "" {
		// Refused before policy: the revision that was serving.
		rec.PolicyRevision = s.decider.RevisionID()
	}
	if s.auditBody {
		if v, ok := in.ParsedBodyValue(); ok {
			rec.Body = v
		}
	}
	if sub, ok := in.Claims["sub"].(string); ok {
		rec.Subject = sub
	}
	if d.RPC.Route {
		rec.JSONRPCMethod, rec.MCPTool, rec.JSONRPCBatch = d.RPC.Method, d.RPC.Tool, d.RPC.Batch
		if d.RPC.HasID {
			rec.JSONRPCID = d.RPC.ID
		}
	}
	rec.Quota = d.Quota
	if d.Roles != "" {
		rec.Roles = splitRoles(d.Roles)
	}
	switch {
	case d.Allow:
		rec.Decision, rec.Status = resultAllow, http.StatusOK
	case d.Status == http.StatusUnauthorized:
		rec.Kind, rec.Decision, rec.Status = audit.KindAuthnFailure, resultDeny, d.Status
	default:
		rec.Kind, rec.Decision, rec.Status = audit.KindAuthzDenial, resultDeny, d.Status
	}
	return rec
}

// selectHeaders copies the configured audit headers present in h.
func (s *Server) selectHeaders(h map[string]string) map[string]string {
	var out map[string]string
	for _, name := range s.auditHeaders {
		if v, ok := h[name]; ok {
			if out == nil {
				out = make(map[string]string, len(s.auditHeaders))
			}
			out[name] = v
		}
	}
	return out
}

// violationPaths keeps only where the body failed: audit records never
// carry the messages, which may quote values.
func violationPaths(vs []policy.Violation) []string {
	if len(vs) == 0 {
		return nil
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = v.Path
	}
	return out
}

func splitRoles(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		out = append(out, s[:i])
		if i == len(s) {
			break
		}
		s = s[i+1:]
	}
	return out
}
