package detect

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/meshward/meshward/extauthz/audit"
)

// Config is the `detection` configuration section. Without rules nothing
// is detected.
type Config struct {
	// Rules are the thresholds watched on the audit stream.
	Rules []Rule `yaml:"rules"`
	// MaxIdentities bounds the identities tracked at once (the least
	// recently seen is forgotten first). Default 10000.
	MaxIdentities int `yaml:"maxIdentities"`
	// QueueSize bounds the records waiting for the detector; beyond it a
	// record is not counted (meshward_detection_records_dropped_total).
	// Default 4096.
	QueueSize int `yaml:"queueSize"`
}

// Rule is one threshold: Threshold records that Match, of one identity,
// within Window.
type Rule struct {
	// Name names the rule in events, logs and metrics.
	Name string `yaml:"name"`
	// Match is what is counted: denies, authnFailures or schemaViolations.
	Match string `yaml:"match"`
	// Threshold is how many matching records raise the event (1 to 10000).
	Threshold int `yaml:"threshold"`
	// Window is the span they are counted over (1s to 24h).
	Window audit.Duration `yaml:"window"`
	// WindowType is sliding (default: any Window-long span) or fixed
	// (windows aligned to multiples of Window since the Unix epoch).
	WindowType string `yaml:"windowType"`
	// Quarantine is off (default: an event only), dryRun (the event says
	// the identity would be quarantined) or enforce (quarantined).
	Quarantine string `yaml:"quarantine"`
}

// What a rule counts.
const (
	MatchDenies           = "denies"
	MatchAuthnFailures    = "authnFailures"
	MatchSchemaViolations = "schemaViolations"
)

// Window types.
const (
	WindowSliding = "sliding"
	WindowFixed   = "fixed"
)

// Quarantine modes.
const (
	QuarantineOff     = "off"
	QuarantineDryRun  = "dryRun"
	QuarantineEnforce = "enforce"
)

// Defaults and limits.
const (
	DefaultMaxIdentities = 10000
	MaxMaxIdentities     = 1000000
	DefaultQueueSize     = 4096
	MaxQueueSize         = 1 << 20
	MaxThreshold         = 10000
	MinWindow            = time.Second
	MaxWindow            = 24 * time.Hour
	// MaxSlidingMemory bounds what sliding windows may hold at worst:
	// maxIdentities × the sum of the sliding thresholds × 16 bytes.
	MaxSlidingMemory = 256 << 20
)

var ruleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)

// SetDefaults fills in defaults.
func (c *Config) SetDefaults() {
	if c.MaxIdentities == 0 {
		c.MaxIdentities = DefaultMaxIdentities
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if r.WindowType == "" {
			r.WindowType = WindowSliding
		}
		if r.Quarantine == "" {
			r.Quarantine = QuarantineOff
		}
	}
}

// Validate reports every problem, each named under path.
func (c *Config) Validate(path string) error {
	var errs []error
	if c.MaxIdentities < 0 || c.MaxIdentities > MaxMaxIdentities {
		errs = append(errs, fmt.Errorf("%s.maxIdentities: must be 1 to %d, not %d", path, MaxMaxIdentities, c.MaxIdentities))
	}
	if c.QueueSize < 0 || c.QueueSize > MaxQueueSize {
		errs = append(errs, fmt.Errorf("%s.queueSize: must be 1 to %d, not %d", path, MaxQueueSize, c.QueueSize))
	}
	names := map[string]int{}
	sliding := 0
	for i, r := range c.Rules {
		p := fmt.Sprintf("%s.rules[%d]", path, i)
		switch j, dup := names[r.Name]; {
		case !ruleName.MatchString(r.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q must be 1 to 63 of a-z, 0-9, '_', '.', '-' (starting with a letter or digit)", p, r.Name))
		case dup:
			errs = append(errs, fmt.Errorf("%s.name: %q is also rules[%d]", p, r.Name, j))
		default:
			names[r.Name] = i
		}
		switch r.Match {
		case MatchDenies, MatchAuthnFailures, MatchSchemaViolations:
		default:
			errs = append(errs, fmt.Errorf("%s.match: must be %s, %s or %s, not %q", p, MatchDenies, MatchAuthnFailures, MatchSchemaViolations, r.Match))
		}
		if r.Threshold < 1 || r.Threshold > MaxThreshold {
			errs = append(errs, fmt.Errorf("%s.threshold: must be 1 to %d, not %d", p, MaxThreshold, r.Threshold))
		}
		if w := time.Duration(r.Window); w < MinWindow || w > MaxWindow {
			errs = append(errs, fmt.Errorf("%s.window: must be %s to %s, not %s", p, MinWindow, MaxWindow, w))
		}
		switch r.WindowType {
		case WindowSliding:
			sliding += r.Threshold
		case "", WindowFixed:
		default:
			errs = append(errs, fmt.Errorf("%s.windowType: must be %s or %s, not %q", p, WindowSliding, WindowFixed, r.WindowType))
		}
		switch r.Quarantine {
		case "", QuarantineOff, QuarantineDryRun, QuarantineEnforce:
		default:
			errs = append(errs, fmt.Errorf("%s.quarantine: must be %s, %s or %s, not %q", p, QuarantineOff, QuarantineDryRun, QuarantineEnforce, r.Quarantine))
		}
	}
	if mem := int64(c.MaxIdentities) * int64(sliding) * 16; c.MaxIdentities > 0 && mem > MaxSlidingMemory {
		errs = append(errs, fmt.Errorf("%s.maxIdentities: %d identities × %d (the sliding rules' thresholds) may hold %d MiB of timestamps, more than %d MiB: lower maxIdentities or the thresholds, or use windowType: fixed",
			path, c.MaxIdentities, sliding, mem>>20, MaxSlidingMemory>>20))
	}
	return errors.Join(errs...)
}

// Enforces reports whether a rule quarantines (the program then needs a
// quarantine state file).
func (c *Config) Enforces() bool {
	for _, r := range c.Rules {
		if r.Quarantine == QuarantineEnforce {
			return true
		}
	}
	return false
}
