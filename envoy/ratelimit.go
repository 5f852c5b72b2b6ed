package envoy

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Quota is a token bucket per caller SPIFFE ID that every agent's Envoy
// enforces on its inbound listener with Envoy's local rate limit filter,
// as a coarse first line in front of meshward's authorizer, which keeps
// the exact quota (see QuotaConfig in package policy: only its quotas
// without a rule or tool can be expressed here, since Envoy sees neither
// which rule allows a request nor, in the body, which tool it calls).
//
// Envoy's bucket is the quota's times Options.RateLimitHeadroom, and it
// counts, per Envoy, every request from the caller that reaches the
// listener (also those the authorizer then denies); the authorizer counts
// the allowed ones, across all the agents a caller calls.
type Quota struct {
	Name string `yaml:"name"`
	// Callers are the SPIFFE IDs the quota applies to, each with its own
	// bucket; empty: every caller. Envoy enforces it for the exact IDs
	// only: an ID with `*` segments is left to the authorizer (a header
	// matcher cannot say "one whole segment" without a regular expression,
	// and Envoy refuses a regex whose RE2 program is larger than 100 by
	// default, which a SPIFFE ID pattern easily is).
	Callers []string `yaml:"callers"`
	// Rate tokens are added per Per (default 1m); the bucket holds Burst
	// (default Rate).
	Rate  int           `yaml:"rate"`
	Per   time.Duration `yaml:"per"`
	Burst int           `yaml:"burst"`
}

// Names of the local rate limit filter and of the descriptor entries it
// builds; they show in Envoy's stats (inbound_quota.http_local_rate_limit.*)
// and debug logs.
const (
	localRateLimitName = "envoy.filters.http.local_ratelimit"
	quotaStatPrefix    = "inbound_quota"
	// xfccHeader is set by the inbound listener's connection manager from
	// the verified peer certificate (SANITIZE_SET, URI only) before any
	// filter runs, so a client cannot choose its value:
	// By=<own SPIFFE ID>;Hash=<peer certificate SHA-256>;URI=<peer SPIFFE ID>.
	xfccHeader = "x-forwarded-client-cert"
	// Descriptor entry keys.
	quotaKey      = "meshward_quota"
	callerKey     = "meshward_caller"      // an exact SPIFFE ID of Quota.Callers
	clientCertKey = "meshward_client_cert" // the whole XFCC value: a bucket per peer certificate
	// minFillInterval is the shortest token bucket fill interval Envoy
	// accepts.
	minFillInterval = 50 * time.Millisecond
	// maxCertBuckets bounds the buckets Envoy keeps for one every-caller
	// quota (max_dynamic_descriptors; Envoy's default is 20). Beyond it
	// the least recently used is dropped, and that caller starts again
	// with a full bucket: more lenient, never stricter.
	maxCertBuckets = 1000
)

// DefaultRateLimitHeadroom is the factor Envoy's buckets are larger than
// the authorizer's quotas (Options.RateLimitHeadroom).
const DefaultRateLimitHeadroom = 2

// validateQuotas reports every problem in qs, named under path. Defaults
// (Per 1m, Burst Rate) are those of policy.QuotaConfig.
func validateQuotas(path, trustDomain string, qs []Quota) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	names := map[string]bool{}
	for i, q := range qs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case q.Name == "":
			add("%s.name: required", p)
		case names[q.Name]:
			add("%s.name: quota %q defined twice", p, q.Name)
		}
		names[q.Name] = true
		if q.Rate < 1 {
			add("%s.rate: must be at least 1", p)
		}
		if q.Per != 0 && q.Per < time.Millisecond {
			add("%s.per: must be at least 1ms", p)
		}
		if q.Burst < 0 {
			add("%s.burst: must not be negative", p)
		}
		for j, c := range q.Callers {
			if err := checkCallerPattern(c, trustDomain); err != nil {
				add("%s.callers[%d]: %v", p, j, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkCallerPattern accepts what policy accepts as a quota's caller: a
// SPIFFE ID of the trust domain, `*` standing for whole segments.
func checkCallerPattern(id, trustDomain string) error {
	rest, ok := strings.CutPrefix(id, spiffeSchemePart+trustDomain+"/")
	if !ok {
		return fmt.Errorf("%q is not a SPIFFE ID of trust domain %q", id, trustDomain)
	}
	for seg := range strings.SplitSeq(rest, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%q has an empty or dot path segment", id)
		}
		if strings.Contains(seg, "*") && seg != "*" {
			return fmt.Errorf("%q: `*` must stand for a whole segment", id)
		}
		if strings.ContainsAny(seg, ";,\"= ") {
			return fmt.Errorf("%q: a SPIFFE ID segment holds letters, digits, '.', '-' and '_' only", id)
		}
	}
	return nil
}

// localRateLimit is the inbound listener's local rate limit filter for
// the mesh's quotas, nil when Envoy can enforce none of them.
func (b *builder) localRateLimit() *hcmv3.HttpFilter {
	cfg := b.localRateLimitConfig()
	if cfg == nil {
		return nil
	}
	return &hcmv3.HttpFilter{
		Name:       localRateLimitName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: b.any(cfg)},
	}
}

func (b *builder) localRateLimitConfig() *localrlv3.LocalRateLimit {
	headroom := uint64(b.mesh.Options.RateLimitHeadroom)
	var (
		limits      []*routev3.RateLimit
		descriptors []*ratelimitv3.LocalRateLimitDescriptor
		perCert     bool
	)
	for _, q := range b.mesh.Quotas {
		bucket := quotaBucket(q, headroom)
		if bucket == nil {
			continue // too large to express: the authorizer's alone
		}
		quota := &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{
			GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: quotaKey, DescriptorValue: q.Name},
		}}
		if len(q.Callers) == 0 {
			// Every caller: a bucket per peer certificate (the whole XFCC
			// value, an empty descriptor value being Envoy's wildcard).
			perCert = true
			limits = append(limits, &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{quota, {
				ActionSpecifier: &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
					HeaderName: xfccHeader, DescriptorKey: clientCertKey,
				}},
			}}})
			descriptors = append(descriptors, &ratelimitv3.LocalRateLimitDescriptor{
				Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: quotaKey, Value: q.Name}, {Key: clientCertKey}},
				TokenBucket: bucket,
			})
			continue
		}
		seen := map[string]bool{}
		for _, id := range q.Callers {
			if strings.Contains(id, "*") || seen[id] {
				continue // a pattern stays with the authorizer; a repeat would be a duplicate descriptor (NACK)
			}
			seen[id] = true
			// XFCC ends with the peer's URI SAN: the connection manager
			// sets no other detail after it.
			limits = append(limits, &routev3.RateLimit{Actions: []*routev3.RateLimit_Action{quota, {
				ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
					DescriptorKey:   callerKey,
					DescriptorValue: id,
					ExpectMatch:     wrapperspb.Bool(true),
					Headers: []*routev3.HeaderMatcher{{
						Name: xfccHeader,
						HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
							StringMatch: suffix(";URI=" + id),
						},
					}},
				}},
			}}})
			descriptors = append(descriptors, &ratelimitv3.LocalRateLimitDescriptor{
				Entries:     []*ratelimitv3.RateLimitDescriptor_Entry{{Key: quotaKey, Value: q.Name}, {Key: callerKey, Value: id}},
				TokenBucket: bucket,
			})
		}
	}
	if len(descriptors) == 0 {
		return nil
	}
	all := &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
		Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED,
	}}
	cfg := &localrlv3.LocalRateLimit{
		StatPrefix:     quotaStatPrefix,
		FilterEnabled:  all,
		FilterEnforced: all,
		// No default token_bucket: a request no descriptor matches is
		// not limited by Envoy; one that matches takes a token from each
		// matching bucket only.
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		RateLimits:                      limits,
		Descriptors:                     descriptors,
		EnableRetryAfterHeader:          true,
	}
	if perCert {
		cfg.MaxDynamicDescriptors = wrapperspb.UInt32(maxCertBuckets)
	}
	return cfg
}

// quotaBucket is q's bucket in Envoy: the same refill rate and size times
// headroom, the fill interval at least Envoy's minimum (the rate kept);
// nil when a value does not fit Envoy's uint32 fields.
func quotaBucket(q Quota, headroom uint64) *typev3.TokenBucket {
	per, burst := q.Per, q.Burst
	if per == 0 {
		per = time.Minute
	}
	if burst == 0 {
		burst = q.Rate
	}
	k := int64(1)
	if per < minFillInterval {
		k = int64((minFillInterval + per - 1) / per)
	}
	// Envoy reads the interval in whole milliseconds; truncating makes it
	// refill a little sooner, never later.
	fill := (per * time.Duration(k)).Truncate(time.Millisecond)
	if q.Rate < 1 || q.Rate > math.MaxUint32 || burst < 1 || burst > math.MaxUint32 {
		return nil
	}
	// With 1 <= Rate, Burst <= MaxUint32 (just checked), k <= 50 (per is
	// at least 1ms) and headroom <= 100, the products fit in 64 bits.
	perFill := uint64(q.Rate) * uint64(k) * headroom //nolint:gosec // G115: bounds checked above
	size := uint64(burst) * headroom                 //nolint:gosec // G115: bounds checked above
	if perFill > math.MaxUint32 || size > math.MaxUint32 || fill < minFillInterval {
		return nil
	}
	return &typev3.TokenBucket{
		MaxTokens:     uint32(size),
		TokensPerFill: wrapperspb.UInt32(uint32(perFill)),
		FillInterval:  dur(fill),
	}
}

func suffix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s}}
}
