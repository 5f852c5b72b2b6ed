// Package kubetest starts a real Kubernetes API server for tests: etcd and
// kube-apiserver as built by `make kube` (see kubebin/), on free loopback
// ports, with a generated serving certificate and bearer-token users,
// stopped by t.Cleanup. No controller-manager, scheduler or kubelet runs:
// objects are stored and watched, nothing acts on them.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
)

// Environment variables naming the binaries; the Makefile sets them.
const (
	EnvAPIServer = "MESHWARD_KUBE_APISERVER_BIN"
	EnvEtcd      = "MESHWARD_ETCD_BIN"
)

// Users the server knows, by bearer token (Server.Config).
const (
	// Admin is in system:masters: every request is allowed.
	Admin = "admin"
	// Meshward is a plain user with no groups beyond system:authenticated:
	// what it may do is what RBAC objects the test creates grant it.
	Meshward = "meshward"
)

// Server is a running etcd and kube-apiserver.
type Server struct {
	// Host is the API server's URL, e.g. https://127.0.0.1:41234.
	Host string
	// CA is the PEM certificate that signed the serving certificate.
	CA []byte

	t       testing.TB
	dir     string
	tokens  map[string]string // user -> token
	apiArgs []string
	etcdBin string
	apiBin  string
	etcd    *proc
	api     *proc
	mu      sync.Mutex
}

// Binaries returns the kube-apiserver and etcd paths. Without them (the
// variables unset, or the files missing) the test fails with a message
// saying to run `make kube`; with -short it is skipped.
func Binaries(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	apiserver, etcd = os.Getenv(EnvAPIServer), os.Getenv(EnvEtcd)
	if apiserver == "" || etcd == "" {
		if testing.Short() {
			t.Skipf("%s or %s not set: skipping the Kubernetes integration test in -short mode", EnvAPIServer, EnvEtcd)
		}
		t.Fatalf("%s or %s is not set: run `make kube` (or `make test`, which builds them) to build kube-apiserver and etcd", EnvAPIServer, EnvEtcd)
	}
	for _, b := range []string{apiserver, etcd} {
		if _, err := os.Stat(b); err != nil { //nolint:gosec // G703: the test runner names the binary to run
			if testing.Short() {
				t.Skipf("%v: skipping the Kubernetes integration test in -short mode (`make kube` builds it)", err)
			}
			t.Fatalf("%v: run `make kube` to build kube-apiserver and etcd", err)
		}
	}
	return apiserver, etcd
}

// Start starts etcd and kube-apiserver and waits until the API server is
// ready. Both are stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	apiBin, etcdBin := Binaries(t)
	dir := t.TempDir()
	s := &Server{t: t, dir: dir, apiBin: apiBin, etcdBin: etcdBin, tokens: map[string]string{}}
	t.Cleanup(s.Stop)

	etcdPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	s.Host = "https://127.0.0.1:" + apiPort
	certFile, keyFile := s.servingCert()
	saPub, saKey := s.serviceAccountKey()
	var tokens strings.Builder
	for user, groups := range map[string]string{Admin: "system:masters", Meshward: ""} {
		tok := randHex(16)
		s.tokens[user] = tok
		fmt.Fprintf(&tokens, "%s,%s,%s,%q\n", tok, user, user, groups)
	}
	tokenFile := s.write("tokens.csv", []byte(tokens.String()))

	s.etcd = start(t, "etcd", etcdBin, "-data-dir", filepath.Join(dir, "etcd"),
		"-listen", "127.0.0.1:"+etcdPort, "-listen-peer", "127.0.0.1:"+peerPort)
	if err := s.etcd.waitOutput("etcd ready", 60*time.Second); err != nil {
		t.Fatalf("kubetest: %v\netcd output:\n%s", err, s.etcd.logs.String())
	}
	s.apiArgs = []string{
		"--etcd-servers=http://127.0.0.1:" + etcdPort,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The kubernetes Service endpoints cannot be a loopback address.
		"--endpoint-reconciler-type=none",
		"--secure-port=" + apiPort,
		"--tls-cert-file=" + certFile,
		"--tls-private-key-file=" + keyFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v=0",
	}
	// The free port may be taken by another process between freePort and
	// the listen (tests of other packages run beside): try another.
	for try := 1; ; try++ {
		err := s.startAPI()
		if err == nil {
			break
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			s.t.Fatalf("kubetest: %v", err)
		}
		apiPort = freePort(t)
		s.Host = "https://127.0.0.1:" + apiPort
		for i, a := range s.apiArgs {
			if strings.HasPrefix(a, "--secure-port=") {
				s.apiArgs[i] = "--secure-port=" + apiPort
			}
		}
	}
	return s
}

// startAPI starts kube-apiserver and waits until it is ready; the error
// carries the end of its output.
func (s *Server) startAPI() error {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.api = start(s.t, "kube-apiserver", s.apiBin, s.apiArgs...)
	if err := s.waitReady(s.api, 120*time.Second); err != nil {
		s.api.stop()
		return fmt.Errorf("%w\nkube-apiserver output (last 8 KiB):\n%s", err, tail(s.api.logs.String(), 8<<10))
	}
	return nil
}

// Config returns a client configuration for user (Admin or Meshward).
func (s *Server) Config(user string) *rest.Config {
	s.t.Helper()
	tok, ok := s.tokens[user]
	if !ok {
		s.t.Fatalf("kubetest: unknown user %q", user)
	}
	return &rest.Config{
		Host:            s.Host,
		BearerToken:     tok,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CA},
		QPS:             100,
		Burst:           200,
	}
}

// Kubeconfig writes a kubeconfig file for user and returns its path.
func (s *Server) Kubeconfig(user string) string {
	s.t.Helper()
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster: {server: %q, certificate-authority-data: %q}
users:
- name: %s
  user: {token: %q}
contexts:
- name: kubetest
  context: {cluster: kubetest, user: %s}
current-context: kubetest
`, s.Host, b64(s.CA), user, s.tokens[user], user)
	return s.write("kubeconfig-"+user, []byte(doc))
}

// StopAPIServer stops kube-apiserver only (etcd keeps the data), to test
// what clients do while it is down; StartAPIServer starts it again on the
// same address.
func (s *Server) StopAPIServer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		s.api.stop()
		s.api = nil
	}
}

// StartAPIServer starts kube-apiserver again after StopAPIServer.
func (s *Server) StartAPIServer() {
	s.t.Helper()
	if err := s.startAPI(); err != nil {
		s.t.Fatalf("kubetest: %v", err)
	}
}

// Stop stops both (idempotent).
func (s *Server) Stop() {
	s.StopAPIServer()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd != nil {
		s.etcd.stop()
		s.etcd = nil
	}
}

// Logs returns what kube-apiserver printed so far.
func (s *Server) Logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api == nil {
		return ""
	}
	return s.api.logs.String()
}

func (s *Server) waitReady(p *proc, timeout time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.CA)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+s.tokens[Admin])
		resp, err := c.Do(req)
		if err == nil {
			_ = resp.Body.Close() // only the status is read
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz: %s", resp.Status)
		}
		last = err
		select {
		case <-p.done:
			return fmt.Errorf("kube-apiserver exited before it was ready")
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready at %s after %v (last error: %w)", s.Host, timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// servingCert makes a CA and a serving certificate for 127.0.0.1 and
// localhost signed by it.
func (s *Server) servingCert() (certFile, keyFile string) {
	s.t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubetest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default.svc"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		s.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		s.t.Fatal(err)
	}
	s.CA = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	certFile = s.write("serving.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = s.write("serving.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	return certFile, keyFile
}

// serviceAccountKey makes the key pair kube-apiserver signs and verifies
// service account tokens with (it requires one).
func (s *Server) serviceAccountKey() (pub, priv string) {
	s.t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		s.t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		s.t.Fatal(err)
	}
	pub = s.write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	priv = s.write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	return pub, priv
}

func (s *Server) write(name string, data []byte) string {
	s.t.Helper()
	p := filepath.Join(s.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// proc is a child process and what it printed.
type proc struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
}

func start(t testing.TB, name, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...) //nolint:gosec // G204: bin is the binary the test runner chose (MESHWARD_*_BIN)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "KUBECONFIG=", "ETCDCTL_API=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: start %s (%s): %v", name, bin, err)
	}
	p := &proc{cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p
}

func (p *proc) waitOutput(want string, timeout time.Duration) error {
	deadline := time.After(timeout)
	for !strings.Contains(p.logs.String(), want) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before printing %q", p.cmd.Path, want)
		case <-deadline:
			return fmt.Errorf("%s did not print %q within %v", p.cmd.Path, want, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("kubetest: free port: %v", err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close() // only the number was wanted
	return port
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
