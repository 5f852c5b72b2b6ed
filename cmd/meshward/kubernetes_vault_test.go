package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/meshward/meshward/cmd/meshward/internal/kube/kubetest"
	"github.com/meshward/meshward/secrets/vaulttest"
)

var kubeExamples = filepath.Join("..", "..", "examples", "kubernetes")

// configMapData returns key of the ConfigMap name in an examples file.
func configMapData(t *testing.T, file, name, key string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(kubeExamples, file))
	if err != nil {
		t.Fatal(err)
	}
	for doc := range strings.SplitSeq("\n"+string(data), "\n---\n") {
		var cm struct {
			Kind     string
			Metadata struct{ Name string }
			Data     map[string]string
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err == nil && cm.Kind == "ConfigMap" && cm.Metadata.Name == name {
			return cm.Data[key]
		}
	}
	t.Fatalf("%s: no ConfigMap %s", file, name)
	return ""
}

// TestKubernetesVaultSetupExample: examples/kubernetes/vault-setup.sh,
// run with the Vault CLI against a real Vault and a real API server, lets
// meshward's ServiceAccount log in (meshward.yaml's settings pass
// `validate --live`) and planner's bootstrap issue planner's xDS client
// certificate with its pod's token; another ServiceAccount's token is
// refused by planner's role.
func TestKubernetesVaultSetupExample(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to run vault-setup.sh")
	}
	vs := vaulttest.Start(t)
	ks := kubetest.Start(t)
	rc := ks.Config(kubetest.Admin)
	crds, _ := filepath.Glob(filepath.Join(kubeExamples, "crds", "*.yaml"))
	kubetest.InstallCRDs(t, rc, crds...)
	kubetest.Apply(t, rc, filepath.Join(kubeExamples, "rbac.yaml"), filepath.Join(kubeExamples, "vault.yaml"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	core := kubernetes.NewForConfigOrDie(rc)
	// planner's namespace and ServiceAccount, as mesh.yaml makes them.
	kubetest.Apply(t, rc, filepath.Join(kubeExamples, "mesh.yaml"))

	// docs/secrets.md's PKI mount (a root here), then the script.
	vc := vs.Client()
	if err := vc.Sys().MountWithContext(ctx, "pki", &vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := vc.Logical().WriteWithContext(ctx, "pki/root/generate/internal", map[string]any{"common_name": "mesh.local root", "key_type": "ec", "key_bits": 256, "ttl": "24h"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	vaultBin, err := filepath.Abs(vaulttest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(vaultBin, filepath.Join(bin, "vault")); err != nil {
		t.Fatal(err)
	}
	// A pod's token, as the kubelet projects it.
	token := func(ns, sa string) string {
		t.Helper()
		tr, err := core.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, ns+"-"+sa+".jwt")
		if err := os.WriteFile(f, []byte(tr.Status.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	// Vault's own ServiceAccount, which vault.yaml lets create TokenReviews.
	if _, err := core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "vault"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := core.CoreV1().ServiceAccounts("vault").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vault"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reviewer, err := os.ReadFile(token("vault", "vault"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "kube-ca.pem")
	if err := os.WriteFile(caFile, ks.CA, 0o600); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join(kubeExamples, "vault-setup.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bash, script) //nolint:gosec // G204: the example script under test
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+dir,
		"VAULT_ADDR="+vs.Addr, "VAULT_TOKEN="+vs.Token,
		"KUBERNETES_HOST="+ks.Host, "KUBERNETES_CA_CERT="+caFile, "TOKEN_REVIEWER_JWT="+string(reviewer))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("vault-setup.sh: %v\n%s", err, out)
	}

	// The example's settings, with this Vault and these files for the
	// pod's mounts.
	settings := func(file, cm, key, role, jwt string) string {
		t.Helper()
		s := configMapData(t, file, cm, key)
		for old, repl := range map[string]string{
			"https://vault.vault.svc:8200":     vs.Addr,
			"/etc/vault-ca/ca.crt":             caFile, // any PEM: this Vault is plain HTTP
			"kubernetes: {role: " + role + "}": "kubernetes: {role: " + role + ", jwtFile: " + jwt + "}",
		} {
			if !strings.Contains(s, old) {
				t.Fatalf("ConfigMap %s: no %q", cm, old)
			}
			s = strings.ReplaceAll(s, old, repl)
		}
		p := filepath.Join(dir, cm+"-"+filepath.Base(jwt)+".yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// meshward: logs in as meshward/meshward; its PKI role allows every
	// SPIFFE ID serve issues.
	mw := settings("meshward.yaml", "meshward", "meshward.yaml", "meshward", token("meshward", "meshward"))
	if code, _, errs := runCmd(t, "validate", "--config", mw, "--live"); code != 0 {
		t.Fatalf("validate --live of meshward's settings = %d: %s", code, errs)
	}

	// planner's bootstrap: logs in as agents/planner, issues planner's ID.
	out := filepath.Join(dir, "envoy")
	boot := settings("agent.yaml", "planner-bootstrap", "bootstrap.yaml", "agent-planner", token("agents", "planner"))
	if code, _, errs := runCmd(t, "bootstrap", "--config", boot, "--node", "planner", "--xds-address", "meshward.meshward.svc:18000",
		"--admin-port", "9901", "--out", out); code != 0 {
		t.Fatalf("bootstrap as planner = %d: %s", code, errs)
	}
	pemData, err := os.ReadFile(filepath.Join(out, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemData)
	if blk == nil {
		t.Fatal("cert.pem: no PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://mesh.local/ns/agents/sa/planner" {
		t.Errorf("planner's xDS client certificate has URI SANs %v", cert.URIs)
	}

	// meshward's token is not planner's: role agent-planner refuses it.
	other := settings("agent.yaml", "planner-bootstrap", "bootstrap.yaml", "agent-planner", token("meshward", "meshward"))
	if code, _, _ := runCmd(t, "bootstrap", "--config", other, "--node", "planner", "--xds-address", "meshward.meshward.svc:18000",
		"--admin-port", "9901", "--out", filepath.Join(dir, "other")); code == 0 {
		t.Error("bootstrap with meshward's token on role agent-planner succeeded")
	}
}
