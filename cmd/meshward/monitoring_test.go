package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.yaml.in/yaml/v3"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/extauthz/audit"
	"github.com/meshward/meshward/policy"
	"github.com/meshward/meshward/secrets"
	"github.com/meshward/meshward/xds"
)

var monitoringDir = filepath.Join("..", "..", "examples", "monitoring")

// descRecorder is a registry that remembers the name and variable labels
// of every metric registered on it, including vectors that have no series
// yet (which /metrics would not show).
type descRecorder struct {
	*prometheus.Registry
	labels map[string][]string
}

var descPattern = regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if m := descPattern.FindStringSubmatch(d.String()); m != nil {
			var ls []string
			if m[2] != "" {
				ls = strings.Split(m[2], ",")
			}
			r.labels[m[1]] = ls
		}
	}
	return r.Registry.Register(c)
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// registeredMetrics builds every part serve registers metrics for, on one
// recording registry, and returns metric name -> variable labels.
func registeredMetrics(t *testing.T) map[string][]string {
	t.Helper()
	rec := &descRecorder{Registry: prometheus.NewRegistry(), labels: map[string][]string{}}
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cfg, err := config.Quickstart()
	if err != nil {
		t.Fatal(err)
	}
	store, err := policy.NewStore(policy.StoreOptions{Registry: rec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.NewRegoBundle(&policy.RegoConfig{BundleURL: "https://bundles.example/b.tar.gz"}, nil, policy.RegoBundleOptions{Registry: rec}); err != nil {
		t.Fatal(err)
	}
	if _, err := secrets.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.New(cfg.Audit, audit.WithRegisterer(rec), audit.WithStdout(io.Discard)); err != nil {
		t.Fatal(err)
	}
	if _, err := extauthz.New(cfg.Authz.Server, cfg.TrustDomain, store, extauthz.Options{Registry: rec}); err != nil {
		t.Fatal(err)
	}
	model, err := translateMesh(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mesh := &xdsMesh{self: xdsServerID(cfg.TrustDomain)}
	mesh.model.Store(model)
	if _, err := xds.New(cfg.XDS, mesh, mesh, nil, nil, xds.WithRegisterer(rec)); err != nil {
		t.Fatal(err)
	}
	return rec.labels
}

// histograms are the metric families docs/metrics.md lists as histograms.
func histograms(t *testing.T) map[string]bool {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(meshward_\\w+)` \\| histogram \\|").FindAllStringSubmatch(string(doc), -1) {
		out[m[1]] = true
	}
	return out
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) (plain ruleFile, operator ruleFile) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir, "alerts.rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&plain); err != nil {
		t.Fatalf("alerts.rules.yaml: %v", err)
	}
	b, err = os.ReadFile(filepath.Join(monitoringDir, "prometheusrule.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Spec       ruleFile `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if pr.APIVersion != "monitoring.coreos.com/v1" || pr.Kind != "PrometheusRule" {
		t.Errorf("prometheusrule.yaml is %s %s, want monitoring.coreos.com/v1 PrometheusRule", pr.APIVersion, pr.Kind)
	}
	return plain, pr.Spec
}

// dashboardExprs are the PromQL expressions of the dashboard: its panels'
// targets and its template variables' queries.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(monitoringDir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(d)
	return out
}

var (
	selectorPattern = regexp.MustCompile(`\b((?:meshward|go|process)_[a-zA-Z0-9_]+)\b(\{[^}]*\})?`)
	matcherPattern  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"`)
	groupingPattern = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	labelRefPattern = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// exprProblems checks one PromQL expression against the registered
// metrics: every metric exists (a histogram only through _bucket, _sum,
// _count), every label matched or grouped by is one of its labels, and
// brackets and quotes balance. It also returns the labels the expression
// groups by and those its metrics have.
func exprProblems(expr string, metrics map[string][]string, hist map[string]bool) (problems, grouped, metricLabels []string) {
	report := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if !balanced(expr) {
		report("unbalanced brackets or quotes in %q", expr)
	}
	found := false
	for _, m := range selectorPattern.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		labels, ok := metrics[name]
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if b, cut := strings.CutSuffix(name, suffix); cut && hist[b] && hasKey(metrics, b) {
					labels, ok = metrics[b], true
					if suffix == "_bucket" {
						labels = append(slices.Clone(labels), "le")
					}
				}
			}
		} else if hist[name] {
			report("histogram %s used without _bucket, _sum or _count", name)
		}
		if !ok {
			report("metric %s is not registered by meshward", name)
			continue
		}
		found = true
		metricLabels = append(metricLabels, labels...)
		for _, lm := range matcherPattern.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, lm[1]) && !slices.Contains(targetLabels, lm[1]) {
				report("%s has no label %q (it has %v)", name, lm[1], labels)
			}
		}
	}
	if !found {
		report("%q uses no meshward metric", expr)
	}
	for _, g := range groupingPattern.FindAllStringSubmatch(expr, -1) {
		for l := range strings.SplitSeq(g[1], ",") {
			l = strings.TrimSpace(l)
			grouped = append(grouped, l)
			if !slices.Contains(metricLabels, l) && !slices.Contains(targetLabels, l) {
				report("groups by %q, which none of its metrics has", l)
			}
		}
	}
	return problems, grouped, metricLabels
}

func hasKey(m map[string][]string, k string) bool { _, ok := m[k]; return ok }

// balanced reports whether (), [] and {} nest and double quotes pair,
// ignoring brackets inside quotes.
func balanced(s string) bool {
	var stack []rune
	in := false
	for i, r := range s {
		switch {
		case in:
			if r == '"' && (i == 0 || s[i-1] != '\\') {
				in = false
			}
		case r == '"':
			in = true
		case r == '(' || r == '[' || r == '{':
			stack = append(stack, r)
		case r == ')' || r == ']' || r == '}':
			open := map[rune]rune{')': '(', ']': '[', '}': '{'}[r]
			if len(stack) == 0 || stack[len(stack)-1] != open {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return !in && len(stack) == 0
}

// TestMonitoringFilesUseRealMetrics: the alert rules and the dashboard in
// examples/monitoring use only metrics and labels meshward registers.
func TestMonitoringFilesUseRealMetrics(t *testing.T) {
	metrics := registeredMetrics(t)
	if len(metrics) < 30 {
		t.Fatalf("recorded only %d metrics: is every component still registering on the given registry?", len(metrics))
	}
	hist := histograms(t)
	if len(hist) < 3 {
		t.Fatalf("docs/metrics.md lists %d histograms, want at least 3", len(hist))
	}
	plain, operator := readRules(t)
	if !reflect.DeepEqual(plain, operator) {
		t.Error("alerts.rules.yaml and prometheusrule.yaml hold different groups")
	}
	used := map[string]bool{}
	names := map[string]bool{}
	for _, g := range plain.Groups {
		for _, r := range g.Rules {
			where := "alerts.rules.yaml: " + r.Alert
			if r.Alert == "" || names[r.Alert] {
				t.Errorf("%s: alert name empty or repeated", where)
			}
			names[r.Alert] = true
			if sev := r.Labels["severity"]; sev != "critical" && sev != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", where, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", where)
			}
			problems, grouped, metricLabels := exprProblems(r.Expr, metrics, hist)
			for _, p := range problems {
				t.Errorf("%s: %s", where, p)
			}
			for _, m := range selectorPattern.FindAllStringSubmatch(r.Expr, -1) {
				used[m[1]] = true
			}
			// $labels in annotations must survive the expression.
			for _, text := range r.Annotations {
				for _, l := range labelRefPattern.FindAllStringSubmatch(text, -1) {
					ok := slices.Contains(grouped, l[1]) || len(grouped) == 0 && slices.Contains(metricLabels, l[1])
					if !ok {
						t.Errorf("%s: annotation uses $labels.%s, which the expression does not keep", where, l[1])
					}
				}
			}
		}
	}
	// Every alert docs/metrics.md describes has a rule.
	for _, m := range []string{"meshward_audit_healthy", "meshward_audit_records_lost_total", "meshward_audit_queue_depth",
		"meshward_authz_errors_total", "meshward_authz_authn_failures_total", "meshward_policy_reloads_total",
		"meshward_xds_nacks_total", "meshward_xds_refused_total", "meshward_secrets_cert_expiry_timestamp_seconds",
		"meshward_secrets_kv_deleted"} {
		if !used[m] {
			t.Errorf("no alert rule uses %s, which docs/metrics.md says to alert on", m)
		}
	}
	exprs := dashboardExprs(t)
	if len(exprs) < 20 {
		t.Fatalf("dashboard has only %d expressions", len(exprs))
	}
	for _, e := range exprs {
		problems, _, _ := exprProblems(e, metrics, hist)
		for _, p := range problems {
			t.Errorf("grafana-dashboard.json: %s", p)
		}
	}
}

// TestExprProblemsCatches: the checker reports what it is there to catch.
func TestExprProblemsCatches(t *testing.T) {
	metrics := map[string][]string{"meshward_x_total": {"result"}, "meshward_h_seconds": nil}
	hist := map[string]bool{"meshward_h_seconds": true}
	for _, tc := range []struct{ expr, want string }{
		{`rate(meshward_y_total[5m])`, "not registered"},
		{`rate(meshward_x_total{reason="a"}[5m])`, `no label "reason"`},
		{`sum by (reason) (rate(meshward_x_total[5m]))`, `groups by "reason"`},
		{`rate(meshward_h_seconds[5m])`, "without _bucket"},
		{`rate(meshward_y_seconds_bucket[5m])`, "not registered"},
		{`sum(rate(meshward_x_total[5m])`, "unbalanced"},
		{`vector(1)`, "uses no meshward metric"},
	} {
		got, _, _ := exprProblems(tc.expr, metrics, hist)
		if !slices.ContainsFunc(got, func(s string) bool { return strings.Contains(s, tc.want) }) {
			t.Errorf("exprProblems(%q) = %q, want a problem with %q", tc.expr, got, tc.want)
		}
	}
	ok := `histogram_quantile(0.99, sum by (le, result) (rate(meshward_h_seconds_bucket[5m]))) + sum(rate(meshward_x_total{result="deny", job=~"$job"}[5m]))`
	if got, _, _ := exprProblems(ok, metrics, hist); len(got) > 0 {
		t.Errorf("a correct expression was reported: %q", got)
	}
}
