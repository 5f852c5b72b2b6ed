package audit

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func yamlDecode(s string, c *Config) error { return yaml.Unmarshal([]byte(s), c) }

func TestConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr []string // substrings, each a field path
		check   func(t *testing.T, c *Config)
	}{
		{name: "defaults", yaml: "{}", check: func(t *testing.T, c *Config) {
			if len(c.Sinks) != 1 || c.Sinks[0].Type != "stdout" || !*c.FailClosed || c.QueueSize != DefaultQueueSize || c.BatchSize != DefaultBatchSize {
				t.Errorf("defaults %+v", c)
			}
		}},
		{name: "file defaults", yaml: "sinks: [{type: file, path: /var/log/a.log}]", check: func(t *testing.T, c *Config) {
			s := c.Sinks[0]
			if s.MaxSizeMB != 100 || *s.MaxFiles != 10 || s.MaxAge != 0 || s.Fsync != FsyncInterval || time.Duration(s.FsyncInterval) != 100*time.Millisecond {
				t.Errorf("file defaults %+v", s)
			}
		}},
		{name: "seven years in days", yaml: "sinks: [{type: file, path: a, maxAge: 2557d, maxFiles: 0}]", check: func(t *testing.T, c *Config) {
			if time.Duration(c.Sinks[0].MaxAge) != 2557*24*time.Hour || *c.Sinks[0].MaxFiles != 0 {
				t.Errorf("maxAge %v maxFiles %v", c.Sinks[0].MaxAge, *c.Sinks[0].MaxFiles)
			}
		}},
		{name: "seven years in hours", yaml: "sinks: [{type: file, path: a, maxAge: 61320h}]", check: func(t *testing.T, c *Config) {
			if time.Duration(c.Sinks[0].MaxAge) != 61320*time.Hour {
				t.Errorf("maxAge %v", c.Sinks[0].MaxAge)
			}
		}},
		{name: "full", yaml: `
failClosed: false
queueSize: 100
batchSize: 10
includeQuery: true
redaction: {headers: [x-patient-id], bodyPaths: [/patient/ssn, "/a~1b"], claims: [email], keyFile: /etc/meshward/audit.key}
sinks: [{type: stdout}, {type: file, path: a, fsync: interval, fsyncInterval: 50ms}]`, check: func(t *testing.T, c *Config) {
			if *c.FailClosed || c.QueueSize != 100 || !c.IncludeQuery || c.Sinks[1].Fsync != FsyncInterval {
				t.Errorf("%+v", c)
			}
		}},
		{name: "seal and encryption", yaml: "seal: {interval: 30s, algorithm: ed25519, keySecret: s}\nencryption: {keyFile: k}", check: func(t *testing.T, c *Config) {
			if time.Duration(c.Seal.Interval) != 30*time.Second || c.Seal.Algorithm != SealEd25519 || c.Encryption.KeyFile != "k" {
				t.Errorf("%+v %+v", c.Seal, c.Encryption)
			}
		}},
		{name: "seal defaults", yaml: "{}", check: func(t *testing.T, c *Config) {
			if time.Duration(c.Seal.Interval) != DefaultSealInterval || c.Seal.Algorithm != SealHMAC {
				t.Errorf("%+v", c.Seal)
			}
		}},
		{name: "bad seal and encryption", yaml: "seal: {interval: 10ms, algorithm: rsa, keyFile: a, keySecret: b}\nencryption: {keyFile: a, keySecret: b}",
			wantErr: []string{"audit.seal.interval: must be at least 1s", `audit.seal.algorithm: must be hmac-sha256 or ed25519, not "rsa"`, "audit.seal: keyFile and keySecret", "audit.encryption: keyFile and keySecret"}},
		{name: "otlp sink", yaml: "sinks: [{type: otlp, endpoint: 'collector:4317', insecure: true, timeout: 2s}]", check: func(t *testing.T, c *Config) {
			if s := c.Sinks[0]; s.Endpoint != "collector:4317" || !s.Insecure || time.Duration(s.Timeout) != 2*time.Second {
				t.Errorf("%+v", s)
			}
		}},
		{name: "bad otlp sink", yaml: "sinks: [{type: otlp, path: x, timeout: -1s}, {type: stdout, endpoint: y}, {type: kafka}, {type: otlp, endpoint: z, insecure: true, caFile: ca.pem}, {type: file, path: f, caFile: ca.pem}]",
			wantErr: []string{"audit.sinks[0].endpoint: required", "audit.sinks[0].timeout: must be positive", "audit.sinks[0]: path, rotation and fsync apply only to a file sink",
				"audit.sinks[1]: endpoint, insecure, caFile and timeout apply only to an otlp sink", `audit.sinks[2].type: must be stdout, file or otlp, not "kafka"`,
				"audit.sinks[3].caFile: verifies the collector over TLS; not with insecure", "audit.sinks[4]: endpoint, insecure, caFile and timeout apply only to an otlp sink"}},
		{name: "too large", yaml: "queueSize: 1000000000\nbatchSize: 100000", wantErr: []string{"audit.queueSize: must be 1 to 1048576", "audit.batchSize: must be 1 to 65536"}},
		{name: "every problem named by path", yaml: `
queueSize: -1
batchSize: -2
redaction: {headers: ["bad name"], bodyPaths: [patient, "/a~2"], claims: [""], keyFile: k, keySecret: k2}
sinks:
  - {type: file}
  - {type: file, path: a, maxSizeMB: -1, maxFiles: -1, maxAge: 30m, fsync: sometimes, fsyncInterval: -1s}
  - {type: file, path: a}
  - {type: stdout, path: x}
  - {type: stdout}
  - {type: syslog}`, wantErr: []string{
			"audit.queueSize:", "audit.batchSize:",
			"audit.redaction.headers[0]:", "audit.redaction.bodyPaths[0]:", "audit.redaction.bodyPaths[1]:", "audit.redaction.claims[0]:",
			"audit.redaction: keyFile and keySecret are exclusive",
			"audit.sinks[0].path: required", "audit.sinks[1].maxSizeMB:", "audit.sinks[1].maxFiles:", "audit.sinks[1].maxAge:",
			"audit.sinks[1].fsync:", "audit.sinks[1].fsyncInterval:", `audit.sinks[2].path: "a" is also sinks[1]`,
			"audit.sinks[3]: path, rotation and fsync apply only to a file sink", "audit.sinks[4]: a second stdout sink",
			"audit.sinks[5].type:",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var c Config
			if err := yamlDecode(tc.yaml, &c); err != nil {
				t.Fatal(err)
			}
			c.SetDefaults()
			err := c.Validate("audit")
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				tc.check(t, &c)
				return
			}
			if err == nil {
				t.Fatal("Validate = nil")
			}
			msg := err.Error()
			for _, w := range tc.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("missing %q in:\n%s", w, msg)
				}
			}
			if n := strings.Count(msg, "\n") + 1; n != len(tc.wantErr) {
				t.Errorf("%d problems, want %d:\n%s", n, len(tc.wantErr), msg)
			}
		})
	}
}

func TestDurationErrors(t *testing.T) {
	for _, in := range []string{"7y", "d", "-1d", "1.5d", "[1]", "99999999999999d"} {
		t.Run(in, func(t *testing.T) {
			var c Config
			if err := yamlDecode("sinks: [{type: file, path: a, maxAge: "+in+"}]", &c); err == nil {
				t.Errorf("maxAge %q accepted as %v", in, c.Sinks[0].MaxAge)
			}
		})
	}
}
