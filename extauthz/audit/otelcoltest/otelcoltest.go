// Package otelcoltest starts a real OpenTelemetry Collector for tests: the
// pinned build that `make otelcol` compiles (see otelcolbin/), with an OTLP
// gRPC receiver on a free loopback port and contrib's file exporter
// writing what it receives as OTLP/JSON, which Received reads back. It is
// stopped by t.Cleanup.
package otelcoltest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	collogspb "go.opentelemetry.io/proto/otlp/collector/logs/v1"
	logspb "go.opentelemetry.io/proto/otlp/logs/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// EnvBinary names the environment variable holding the collector binary's
// path. The Makefile sets it.
const EnvBinary = "MESHWARD_OTELCOL_BIN"

// Binary returns the collector binary's path. Without it the test fails
// with a message saying to run `make otelcol`; with -short it is skipped.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv(EnvBinary)
	if bin == "" {
		if testing.Short() {
			t.Skipf("%s not set: skipping the OpenTelemetry Collector integration test in -short mode", EnvBinary)
		}
		t.Fatalf("%s is not set: run `make otelcol` (or `make test`, which builds it) to build the OpenTelemetry Collector", EnvBinary)
	}
	if _, err := os.Stat(bin); err != nil { //nolint:gosec // G703: the test runner names the binary to run; no untrusted input
		t.Fatalf("%s=%s: %v: run `make otelcol` to build the OpenTelemetry Collector", EnvBinary, bin, err)
	}
	return bin
}

// Option configures Start.
type Option func(*Collector)

// WithTLS makes the OTLP receiver serve TLS with this PEM certificate
// (chain) and key.
func WithTLS(certFile, keyFile string) Option {
	return func(c *Collector) { c.certFile, c.keyFile = certFile, keyFile }
}

// Collector is a running OpenTelemetry Collector.
type Collector struct {
	// Endpoint is the OTLP gRPC receiver's host:port, e.g. 127.0.0.1:41234.
	Endpoint string

	t                 testing.TB
	bin, dir          string
	certFile, keyFile string

	mu    sync.Mutex
	runs  int // outputs out-1.jsonl ... out-<runs>.jsonl, one per start
	cmd   *exec.Cmd
	logs  *syncWriter
	done  chan struct{}
	ended []string // output of the runs that were stopped
}

// Start starts a collector and waits until its OTLP receiver accepts
// connections. It is stopped when the test ends.
func Start(t testing.TB, opts ...Option) *Collector {
	t.Helper()
	bin := Binary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("otelcoltest: free port: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("otelcoltest: free port: %v", err)
	}
	c := &Collector{Endpoint: addr, t: t, bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(c)
	}
	t.Cleanup(c.Stop)
	c.start()
	return c
}

// config is the collector's configuration for one run: OTLP gRPC in, file
// out (flushed every 10 ms), and no telemetry server of its own.
func (c *Collector) config(out string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: %q\n", c.Endpoint)
	if c.certFile != "" {
		fmt.Fprintf(&b, "        tls:\n          cert_file: %q\n          key_file: %q\n", c.certFile, c.keyFile)
	}
	fmt.Fprintf(&b, "exporters:\n  file:\n    path: %q\n    flush_interval: 10ms\n", out)
	b.WriteString("service:\n  telemetry:\n    logs:\n      level: warn\n    metrics:\n      level: none\n" +
		"  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [file]\n")
	return b.String()
}

func (c *Collector) start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.runs++
	out := filepath.Join(c.dir, "out-"+strconv.Itoa(c.runs)+".jsonl")
	cfg := filepath.Join(c.dir, "config-"+strconv.Itoa(c.runs)+".yaml")
	if err := os.WriteFile(cfg, []byte(c.config(out)), 0o600); err != nil {
		c.t.Fatalf("otelcoltest: %v", err)
	}
	cmd := exec.Command(c.bin, "--config", "file:"+cfg) //nolint:gosec // G204: c.bin is the collector binary the test runner chose (MESHWARD_OTELCOL_BIN)
	cmd.Env = append(os.Environ(), "HOME="+c.dir)
	logs := &syncWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("otelcoltest: start %s: %v", c.bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	c.cmd, c.logs, c.done = cmd, logs, done
	if err := waitListening(c.Endpoint, done, 60*time.Second); err != nil {
		_ = cmd.Process.Kill()
		<-done
		c.t.Fatalf("otelcoltest: %v\ncollector output:\n%s", err, logs.String())
	}
}

// waitListening waits until addr accepts TCP connections: the collector
// starts its receivers after its exporters and pipelines, so a listening
// receiver is a ready collector.
func waitListening(addr string, done <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close() // only reachability is tested
			return nil
		}
		select {
		case <-done:
			return errors.New("collector exited before its receiver listened")
		case <-ctx.Done():
			return fmt.Errorf("collector not listening on %s after %v (last error: %w)", addr, timeout, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops the collector with SIGTERM (it flushes its file exporter);
// idempotent. What it received stays readable by Received.
func (c *Collector) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	c.ended = append(c.ended, c.logs.String())
	c.cmd = nil
}

// Restart stops the collector and starts a new one on the same endpoint;
// the new run writes to a new output file, read after the old ones.
func (c *Collector) Restart() {
	c.t.Helper()
	c.Stop()
	c.start()
}

// Output returns what the collector printed, over all runs.
func (c *Collector) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := strings.Join(c.ended, "")
	if c.cmd != nil {
		s += c.logs.String()
	}
	return s
}

// Log is one log record the collector received, with the string
// attributes of its resource and its scope's name.
type Log struct {
	Resource map[string]string
	Scope    string
	Record   *logspb.LogRecord
}

// Received returns the log records the collector has written so far, in
// the order it received them, over all runs.
func (c *Collector) Received() ([]Log, error) {
	c.mu.Lock()
	runs := c.runs
	c.mu.Unlock()
	var logs []Log
	for i := 1; i <= runs; i++ {
		b, err := os.ReadFile(filepath.Join(c.dir, "out-"+strconv.Itoa(i)+".jsonl"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("otelcoltest: %w", err)
		}
		// A last line without its newline is a write in progress: it is
		// left for the next call.
		lines := bytes.Split(b, []byte("\n"))
		for _, line := range lines[:len(lines)-1] {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var req collogspb.ExportLogsServiceRequest
			if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(line, &req); err != nil {
				return nil, fmt.Errorf("otelcoltest: run %d output: %w", i, err)
			}
			logs = append(logs, flatten(&req)...)
		}
	}
	return logs, nil
}

func flatten(req *collogspb.ExportLogsServiceRequest) []Log {
	var logs []Log
	for _, rl := range req.GetResourceLogs() {
		res := map[string]string{}
		for _, kv := range rl.GetResource().GetAttributes() {
			res[kv.GetKey()] = kv.GetValue().GetStringValue()
		}
		for _, sl := range rl.GetScopeLogs() {
			for _, lr := range sl.GetLogRecords() {
				logs = append(logs, Log{Resource: res, Scope: sl.GetScope().GetName(), Record: lr})
			}
		}
	}
	return logs
}

// WaitReceived waits until the collector has written at least n log
// records and returns them, or fails the test after a deadline.
func (c *Collector) WaitReceived(t testing.TB, n int) []Log {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := c.Received()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("otelcoltest: collector wrote %d log records, want %d\ncollector output:\n%s", len(got), n, c.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TLSFiles are PEM files written by GenerateTLS.
type TLSFiles struct {
	CAFile   string // the CA's certificate
	CertFile string // the collector's serving certificate (IP SAN 127.0.0.1), signed by the CA
	KeyFile  string // its key
}

// GenerateTLS writes a fresh ECDSA P-256 CA and a serving certificate for
// 127.0.0.1 signed by it into a temporary directory.
func GenerateTLS(t testing.TB) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "otelcoltest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := TLSFiles{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}
	for name, block := range map[string]*pem.Block{
		f.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		f.CertFile: {Type: "CERTIFICATE", Bytes: der},
		f.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(name, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
