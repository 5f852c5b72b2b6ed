package audit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is the `audit` configuration section.
type Config struct {
	// Sinks receive every record. Default: one stdout sink.
	Sinks []SinkConfig `yaml:"sinks"`
	// FailClosed turns a decision into a deny when its record cannot be
	// kept. Default true.
	FailClosed *bool `yaml:"failClosed"`
	// QueueSize bounds the records waiting to be written. Default 8192.
	QueueSize int `yaml:"queueSize"`
	// BatchSize is the most records written to a sink in one write.
	// Default 256.
	BatchSize int `yaml:"batchSize"`
	// IncludeQuery keeps the query string of the request path. Default
	// false: the query is dropped, since it often carries personal data.
	IncludeQuery bool `yaml:"includeQuery"`
	// IncludeBody writes Record.Body (with Redaction.BodyPaths redacted).
	// Default false: no body is written.
	IncludeBody bool `yaml:"includeBody"`
	// Redaction names what is written as hmac-sha256:<hex>.
	Redaction Redaction `yaml:"redaction"`
	// Seal signs the hash chain of every file sink.
	Seal Seal `yaml:"seal"`
	// Encryption encrypts every file sink's records at rest.
	Encryption Encryption `yaml:"encryption"`
	// Shred encrypts personal fields per data subject, so that a subject
	// can be forgotten without breaking the chain.
	Shred Shred `yaml:"shred"`
}

// Shred configures crypto-shredding: with a KeyStore, the end-user
// subject and the listed headers and claims of each record are encrypted
// with a key of that subject (wrapped with the encryption key), which
// `meshward audit forget` destroys.
type Shred struct {
	// KeyStore is the folder holding one key file per data subject
	// (mode 0700, files 0600). Requires an encryption key.
	KeyStore string `yaml:"keyStore"`
	// Headers are header names (case-insensitive) encrypted with the
	// subject's key.
	Headers []string `yaml:"headers"`
	// Claims are top-level JWT claim names encrypted with the subject's key.
	Claims []string `yaml:"claims"`
}

// Seal configures the seals a file sink writes over its hash chain: at
// every open, every Interval, at rotation and at shutdown.
type Seal struct {
	// Interval between seals while running (idle or not). Default 10s,
	// at least 1s.
	Interval Duration `yaml:"interval"`
	// Algorithm is hmac-sha256 (default) or ed25519.
	Algorithm string `yaml:"algorithm"`
	// KeyFile holds the seal key: for hmac-sha256 at least 16 bytes, for
	// ed25519 a 32-byte seed (raw, hex or base64).
	KeyFile string `yaml:"keyFile"`
	// KeySecret names a generic secret of the secrets source holding the
	// seal key; the program reads it with WithSealKeySource.
	KeySecret string `yaml:"keySecret"`
}

// Encryption configures AES-256-GCM encryption of file sink records.
// Without a key nothing is encrypted.
type Encryption struct {
	// KeyFile holds the 32-byte key (raw, hex or base64).
	KeyFile string `yaml:"keyFile"`
	// KeySecret names a generic secret of the secrets source holding the
	// key; the program reads it with WithEncryptionKeySource.
	KeySecret string `yaml:"keySecret"`
}

// Seal algorithms.
const (
	SealHMAC    = "hmac-sha256"
	SealEd25519 = "ed25519"
)

// DefaultSealInterval is how often a running file sink seals its chain.
const DefaultSealInterval = 10 * time.Second

// Redaction lists the values written as HMAC-SHA256 digests keyed by a
// deployment key, so that equal values can be correlated without being
// readable. Credentials (Authorization, Cookie, tokens, private keys) are
// redacted whatever this lists.
type Redaction struct {
	// Headers are header names (case-insensitive).
	Headers []string `yaml:"headers"`
	// BodyPaths are JSON pointers (RFC 6901) into the body, e.g. /patient/id.
	BodyPaths []string `yaml:"bodyPaths"`
	// Claims are top-level JWT claim names; "sub" also redacts the subject.
	Claims []string `yaml:"claims"`
	// KeyFile holds the HMAC key (at least 16 bytes, surrounding
	// whitespace ignored).
	KeyFile string `yaml:"keyFile"`
	// KeySecret names a generic secret of the secrets source (an entry of
	// secrets.vault.kv or secrets.local.secrets) holding the HMAC key; the
	// program reads it with WithKeySource.
	KeySecret string `yaml:"keySecret"`
}

// SinkConfig is one destination of audit records.
type SinkConfig struct {
	// Type is "stdout" or "file".
	Type string `yaml:"type"`
	// Path of the file sink.
	Path string `yaml:"path"`
	// MaxSizeMB rotates the file before it grows past this size. Default 100.
	MaxSizeMB int `yaml:"maxSizeMB"`
	// MaxFiles is how many rotated files are kept; 0 keeps any number (then
	// only MaxAge removes them). Default 10.
	MaxFiles *int `yaml:"maxFiles"`
	// MaxAge removes rotated files whose last record is older than this,
	// e.g. 61320h or 2557d (7 years). Default 0: never by age.
	MaxAge Duration `yaml:"maxAge"`
	// Fsync is "interval" (default: at most every FsyncInterval), "batch"
	// (after every write) or "never" (left to the kernel).
	Fsync string `yaml:"fsync"`
	// FsyncInterval for Fsync "interval". Default 100ms.
	FsyncInterval Duration `yaml:"fsyncInterval"`
	// Endpoint of the otlp sink: host:port of an OTLP gRPC receiver.
	Endpoint string `yaml:"endpoint"`
	// Insecure: the otlp sink speaks plaintext gRPC (a local collector).
	// Default false: TLS with the system roots, or CAFile's.
	Insecure bool `yaml:"insecure"`
	// CAFile of the otlp sink: PEM certificates of the CAs that sign the
	// collector's serving certificate, used instead of the system roots.
	// Read at start.
	CAFile string `yaml:"caFile"`
	// Timeout of one export by the otlp sink. Default 5s.
	Timeout Duration `yaml:"timeout"`
	// Format of a file or stdout sink: json (default, meshward's records;
	// a file is chained, sealed and encrypted as configured) or ocsf (an
	// OCSF event per record; not chained, sealed or encrypted).
	Format string `yaml:"format"`
}

// Defaults.
const (
	DefaultQueueSize     = 8192
	DefaultBatchSize     = 256
	DefaultMaxSizeMB     = 100
	DefaultMaxFiles      = 10
	DefaultFsync         = FsyncInterval
	DefaultFsyncInterval = 100 * time.Millisecond
	MaxQueueSize         = 1 << 20
	MaxBatchSize         = 1 << 16
)

// Fsync policies.
const (
	FsyncBatch    = "batch"
	FsyncInterval = "interval"
	FsyncNever    = "never"
)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if len(c.Sinks) == 0 {
		c.Sinks = []SinkConfig{{Type: "stdout"}}
	}
	if c.FailClosed == nil {
		t := true
		c.FailClosed = &t
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.Seal.Interval == 0 {
		c.Seal.Interval = Duration(DefaultSealInterval)
	}
	if c.Seal.Algorithm == "" {
		c.Seal.Algorithm = SealHMAC
	}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		if s.Type != "file" {
			continue
		}
		if s.MaxSizeMB == 0 {
			s.MaxSizeMB = DefaultMaxSizeMB
		}
		if s.MaxFiles == nil {
			n := DefaultMaxFiles
			s.MaxFiles = &n
		}
		if s.Fsync == "" {
			s.Fsync = DefaultFsync
		}
		if s.FsyncInterval == 0 {
			s.FsyncInterval = Duration(DefaultFsyncInterval)
		}
	}
}

// Validate reports every problem in c, named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	if c.QueueSize < 0 || c.QueueSize > MaxQueueSize {
		errs = append(errs, fmt.Errorf("%s.queueSize: must be 1 to %d, not %d", path, MaxQueueSize, c.QueueSize))
	}
	if c.BatchSize < 0 || c.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("%s.batchSize: must be 1 to %d, not %d", path, MaxBatchSize, c.BatchSize))
	}
	files := map[string]int{}
	stdout := -1
	for i, s := range c.Sinks {
		p := fmt.Sprintf("%s.sinks[%d]", path, i)
		switch s.Type {
		case "stdout":
			if stdout >= 0 {
				errs = append(errs, fmt.Errorf("%s: a second stdout sink (first at sinks[%d])", p, stdout))
			}
			stdout = i
			if s.Path != "" || s.MaxSizeMB != 0 || s.MaxFiles != nil || s.MaxAge != 0 || s.Fsync != "" || s.FsyncInterval != 0 {
				errs = append(errs, fmt.Errorf("%s: path, rotation and fsync apply only to a file sink", p))
			}
			if s.Endpoint != "" || s.Insecure || s.Timeout != 0 || s.CAFile != "" {
				errs = append(errs, fmt.Errorf("%s: endpoint, insecure, caFile and timeout apply only to an otlp sink", p))
			}
		case "otlp":
			if s.Endpoint == "" {
				errs = append(errs, fmt.Errorf("%s.endpoint: required for an otlp sink (host:port)", p))
			}
			if s.Timeout < 0 {
				errs = append(errs, fmt.Errorf("%s.timeout: must be positive, not %s", p, s.Timeout))
			}
			if s.Insecure && s.CAFile != "" {
				errs = append(errs, fmt.Errorf("%s.caFile: verifies the collector over TLS; not with insecure", p))
			}
			if s.Path != "" || s.MaxSizeMB != 0 || s.MaxFiles != nil || s.MaxAge != 0 || s.Fsync != "" || s.FsyncInterval != 0 {
				errs = append(errs, fmt.Errorf("%s: path, rotation and fsync apply only to a file sink", p))
			}
		case "file":
			if s.Path == "" {
				errs = append(errs, fmt.Errorf("%s.path: required for a file sink", p))
			} else if j, ok := files[s.Path]; ok {
				errs = append(errs, fmt.Errorf("%s.path: %q is also sinks[%d]", p, s.Path, j))
			} else {
				files[s.Path] = i
			}
			if s.MaxSizeMB < 0 {
				errs = append(errs, fmt.Errorf("%s.maxSizeMB: must be positive, not %d", p, s.MaxSizeMB))
			}
			if s.MaxFiles != nil && *s.MaxFiles < 0 {
				errs = append(errs, fmt.Errorf("%s.maxFiles: must be 0 (no limit) or more, not %d", p, *s.MaxFiles))
			}
			if s.MaxAge < 0 || (s.MaxAge > 0 && time.Duration(s.MaxAge) < time.Hour) {
				errs = append(errs, fmt.Errorf("%s.maxAge: must be 0 (no limit) or at least 1h, not %s", p, s.MaxAge))
			}
			switch s.Fsync {
			case "", FsyncBatch, FsyncInterval, FsyncNever:
			default:
				errs = append(errs, fmt.Errorf("%s.fsync: must be batch, interval or never, not %q", p, s.Fsync))
			}
			if s.FsyncInterval < 0 {
				errs = append(errs, fmt.Errorf("%s.fsyncInterval: must be positive, not %s", p, s.FsyncInterval))
			}
			if s.Endpoint != "" || s.Insecure || s.Timeout != 0 || s.CAFile != "" {
				errs = append(errs, fmt.Errorf("%s: endpoint, insecure, caFile and timeout apply only to an otlp sink", p))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.type: must be stdout, file or otlp, not %q", p, s.Type))
		}
		switch s.Format {
		case "", FormatJSON:
		case FormatOCSF:
			if s.Type == "otlp" {
				errs = append(errs, fmt.Errorf("%s.format: an otlp sink exports records as they are; format applies to file and stdout sinks", p))
			}
		default:
			errs = append(errs, fmt.Errorf("%s.format: must be %s or %s, not %q", p, FormatJSON, FormatOCSF, s.Format))
		}
	}
	r := c.Redaction
	for i, h := range r.Headers {
		if h == "" || strings.ContainsAny(h, " :\t\r\n") {
			errs = append(errs, fmt.Errorf("%s.redaction.headers[%d]: %q is not a header name", path, i, h))
		}
	}
	for i, bp := range r.BodyPaths {
		if _, err := parsePointer(bp); err != nil {
			errs = append(errs, fmt.Errorf("%s.redaction.bodyPaths[%d]: %w", path, i, err))
		}
	}
	for i, cl := range r.Claims {
		if cl == "" {
			errs = append(errs, fmt.Errorf("%s.redaction.claims[%d]: empty claim name", path, i))
		}
	}
	if r.KeyFile != "" && r.KeySecret != "" {
		errs = append(errs, fmt.Errorf("%s.redaction: keyFile and keySecret are exclusive", path))
	}
	if c.Seal.Interval < 0 || (c.Seal.Interval > 0 && time.Duration(c.Seal.Interval) < time.Second) {
		errs = append(errs, fmt.Errorf("%s.seal.interval: must be at least 1s, not %s", path, c.Seal.Interval))
	}
	switch c.Seal.Algorithm {
	case "", SealHMAC, SealEd25519:
	default:
		errs = append(errs, fmt.Errorf("%s.seal.algorithm: must be %s or %s, not %q", path, SealHMAC, SealEd25519, c.Seal.Algorithm))
	}
	if c.Seal.KeyFile != "" && c.Seal.KeySecret != "" {
		errs = append(errs, fmt.Errorf("%s.seal: keyFile and keySecret are exclusive", path))
	}
	for i, h := range c.Shred.Headers {
		if h == "" || strings.ContainsAny(h, " :\t\r\n") {
			errs = append(errs, fmt.Errorf("%s.shred.headers[%d]: %q is not a header name", path, i, h))
		}
	}
	for i, cl := range c.Shred.Claims {
		if cl == "" {
			errs = append(errs, fmt.Errorf("%s.shred.claims[%d]: empty claim name", path, i))
		}
	}
	if c.Shred.KeyStore == "" && (len(c.Shred.Headers) > 0 || len(c.Shred.Claims) > 0) {
		errs = append(errs, fmt.Errorf("%s.shred.keyStore: required with shred.headers or shred.claims", path))
	}
	if c.Shred.KeyStore != "" && c.Encryption.KeyFile == "" && c.Encryption.KeySecret == "" {
		errs = append(errs, fmt.Errorf("%s.shred.keyStore: needs an encryption key (encryption.keyFile or keySecret) to wrap subject keys", path))
	}
	if c.Encryption.KeyFile != "" && c.Encryption.KeySecret != "" {
		errs = append(errs, fmt.Errorf("%s.encryption: keyFile and keySecret are exclusive", path))
	}
	return errors.Join(errs...)
}

// Duration is a time.Duration written in configuration as Go does
// ("61320h", "90m") or in days ("2557d").
type Duration time.Duration

// String formats d as time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalText parses "2557d", "61320h", or "0".
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "0" {
		*d = 0
		return nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || n < 0 || n > int64(time.Duration(1<<63-1)/(24*time.Hour)) {
			return fmt.Errorf("invalid duration %q: want whole days like 2557d", s)
		}
		*d = Duration(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q: want e.g. 61320h or 2557d", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML reads a scalar the way UnmarshalText does.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a scalar like 61320h or 2557d", n.Line)
	}
	if err := d.UnmarshalText([]byte(n.Value)); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}
