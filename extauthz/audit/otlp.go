package audit

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlplog/otlploggrpc"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"google.golang.org/grpc/credentials"
)

// DefaultOTLPTimeout bounds one export of a batch.
const DefaultOTLPTimeout = 5 * time.Second

// otlpSink exports each batch as OpenTelemetry log records over OTLP gRPC
// with the official SDK: the records are emitted through an SDK logger
// (so they carry its resource and scope) into a processor that collects
// them, and the batch is exported synchronously by the writer goroutine,
// so that an export error is a write error of the sink (held, retried,
// fail-closed) as for every other sink. The SDK's own retries are off:
// the logger retries.
type otlpSink struct {
	endpoint string
	insecure bool
	roots    *x509.CertPool // nil: the system roots
	timeout  time.Duration
	process  string

	exp    *otlploggrpc.Exporter
	lp     *sdklog.LoggerProvider
	logger otellog.Logger
	col    *collector
}

// collector is an SDK processor that keeps what is emitted for one export.
type collector struct{ recs []sdklog.Record }

func (c *collector) OnEmit(_ context.Context, r *sdklog.Record) error {
	c.recs = append(c.recs, r.Clone())
	return nil
}
func (c *collector) Enabled(context.Context, sdklog.EnabledParameters) bool { return true }
func (c *collector) Shutdown(context.Context) error                         { return nil }
func (c *collector) ForceFlush(context.Context) error                       { return nil }

func newOTLPSink(c SinkConfig, process string, readFile func(string) ([]byte, error)) (*otlpSink, error) {
	t := time.Duration(c.Timeout)
	if t <= 0 {
		t = DefaultOTLPTimeout
	}
	s := &otlpSink{endpoint: c.Endpoint, insecure: c.Insecure, timeout: t, process: process}
	if c.CAFile != "" {
		pem, err := readFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("otlp sink %s: read caFile: %w", c.Endpoint, err)
		}
		s.roots = x509.NewCertPool()
		if !s.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("otlp sink %s: caFile %s holds no PEM certificate", c.Endpoint, c.CAFile)
		}
	}
	return s, nil
}

func (s *otlpSink) name() string   { return "otlp:" + s.endpoint }
func (s *otlpSink) warning() error { return nil }
func (s *otlpSink) flush(bool) error {
	return nil // every write is an export
}

func (s *otlpSink) open() (int64, error) {
	opts := []otlploggrpc.Option{otlploggrpc.WithEndpoint(s.endpoint), otlploggrpc.WithTimeout(s.timeout),
		otlploggrpc.WithRetry(otlploggrpc.RetryConfig{Enabled: false})}
	switch {
	case s.insecure:
		opts = append(opts, otlploggrpc.WithInsecure())
	case s.roots != nil:
		opts = append(opts, otlploggrpc.WithTLSCredentials(credentials.NewTLS(&tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12})))
	}
	exp, err := otlploggrpc.New(context.Background(), opts...) // connects lazily
	if err != nil {
		return 0, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("meshward"), attribute.String("meshward.audit.process", s.process))
	s.exp, s.col = exp, &collector{}
	s.lp = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(s.col))
	s.logger = s.lp.Logger("github.com/meshward/meshward/extauthz/audit")
	return 0, nil
}

// write exports the lines of p, one log record each: the body is the
// record's JSON line, the event name its kind, the timestamp its time,
// the severity WARN for a deny or an error decision and for security
// events, INFO otherwise.
func (s *otlpSink) write(p []byte) error {
	s.col.recs = s.col.recs[:0]
	ctx := context.Background()
	now := time.Now()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			i = len(p)
		}
		line := p[:i]
		p = p[min(i+1, len(p)):]
		var r otellog.Record
		kind, ts := lineKindTime(line)
		r.SetEventName(kind)
		r.SetTimestamp(ts)
		r.SetObservedTimestamp(now)
		sev, text := otellog.SeverityInfo, "INFO"
		if kind != KindDecision || bytes.Contains(line, []byte(`"decision":"deny"`)) || bytes.Contains(line, []byte(`"decision":"error"`)) {
			sev, text = otellog.SeverityWarn, "WARN"
		}
		r.SetSeverity(sev)
		r.SetSeverityText(text)
		r.SetBody(attribute.StringValue(string(line)))
		s.logger.Emit(ctx, r)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.exp.Export(ctx, s.col.recs)
}

// lineKindTime reads kind and time from the start of a record line
// (written by appendRecord: {"kind":"...","time":"...").
func lineKindTime(line []byte) (string, time.Time) {
	const k, t = `{"kind":"`, `","time":"`
	if !bytes.HasPrefix(line, []byte(k)) {
		return "", time.Time{}
	}
	rest := line[len(k):]
	i := bytes.Index(rest, []byte(t))
	if i < 0 {
		return "", time.Time{}
	}
	kind := string(rest[:i])
	rest = rest[i+len(t):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return kind, time.Time{}
	}
	ts, _ := time.Parse(time.RFC3339Nano, string(rest[:j]))
	return kind, ts
}

func (s *otlpSink) close() error {
	if s.exp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	err := s.exp.Shutdown(ctx)
	_ = s.lp.Shutdown(ctx) // the collector holds nothing to flush
	s.exp = nil
	return err
}
