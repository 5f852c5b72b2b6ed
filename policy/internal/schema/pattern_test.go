package schema

import (
	"regexp"
	"strings"
	"testing"
)

// patternCases are patterns with the strings they are tried on, and
// whether the scan (rather than regexp) must decide them.
var patternCases = []struct {
	expr   string
	simple bool
	inputs []string
}{
	{`^[a-f0-9-]{36}$`, true, []string{"5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a11", "5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a1", "5f1c2f8e-8f0b-4f69-9d52-9c3f3c0d8a111", "5F1C2F8E-8F0B-4F69-9D52-9C3F3C0D8A11", ""}},
	{`^[a-z][a-z0-9_]*$`, true, []string{"a", "a_1", "1a", "", "ab-"}},
	{`^[a-z0-9]*[a-z]$`, false, []string{"a", "1a", "a1", ""}}, // a star overlapping what follows: regexp
	{`^[A-Z]+-[0-9]{2,4}$`, true, []string{"AB-12", "AB-1", "AB-12345", "-12", "AB12", "ab-12"}},
	{`^v[0-9]+\.[0-9]+$`, true, []string{"v1.2", "v10.20", "v1.", "v.1", "x1.2", "v1.2\n"}},
	{`^x?y*z+$`, true, []string{"z", "xz", "yyz", "xyyzz", "x", "xy", "", "zx"}},
	{`^a*a$`, false, []string{"a", "aa", ""}},         // greedy would take the last a
	{`^[ab]*b?c$`, false, []string{"abc", "bc"}},      // overlap with an optional span
	{`^[ac]*b?c$`, false, []string{"ac", "abc", "c"}}, // overlap past an optional span
	{`^[a-c]*-?d$`, true, []string{"abd", "ab-d", "-d", "d", "ab--d"}},
	{`^$`, true, []string{"", "a", "\n"}},
	{`^.{2}$`, false, []string{"ab", "é1", "abc"}},
	{`^[^a]$`, false, []string{"b", "a", "é"}},
	{`^(?i)ab$`, false, []string{"AB", "ab", "aB"}},
	{`^(ab)+$`, false, []string{"abab", "aba"}},
	{`[a-z]+`, false, []string{"ab", "1a", "12"}},
	{`^[a-z]+`, false, []string{"ab1", "1"}},
	{`(?m)^[a-z]+$`, false, []string{"ab\ncd", "ab"}},
	{`^[a-z]{2,}$`, true, []string{"a", "ab", "abcdef", "ab1"}},
	{`^[a-z]{0,2}$`, true, []string{"", "a", "ab", "abc"}},
	{`^é+$`, false, []string{"é", "éé", "e"}},
	{`^[a-z]+$`, true, []string{"abc", "ab\xff", "abé", "ab\x00", "ABC"}},
	{`^\d{3}-\w+$`, true, []string{"123-ab_9", "12-ab", "123-", "123-é"}},
}

// TestPatternMatchesRegexp: whichever way a pattern is matched, the
// answer is regexp's.
func TestPatternMatchesRegexp(t *testing.T) {
	for _, c := range patternCases {
		p, err := compilePattern(c.expr)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if got := p.spans != nil; got != c.simple {
			t.Errorf("%s: scanned = %v, want %v", c.expr, got, c.simple)
		}
		re := regexp.MustCompile(c.expr)
		for _, s := range c.inputs {
			if got, want := p.MatchString(s), re.MatchString(s); got != want {
				t.Errorf("%s on %q: %v, regexp says %v", c.expr, s, got, want)
			}
		}
		if p.String() != c.expr {
			t.Errorf("String() = %q, want %q", p.String(), c.expr)
		}
	}
}

// FuzzPattern: the scan agrees with regexp on any pattern it takes and
// any string.
func FuzzPattern(f *testing.F) {
	for _, c := range patternCases {
		for _, s := range c.inputs {
			f.Add(c.expr, s)
		}
	}
	f.Fuzz(func(t *testing.T, expr, s string) {
		p, err := compilePattern(expr)
		if err != nil {
			return
		}
		want := p.re.MatchString(s)
		if got := p.MatchString(s); got != want {
			t.Fatalf("%q on %q: %v, regexp says %v (spans %v)", expr, s, got, want, p.spans)
		}
		// Strings built from the pattern's own bytes reach matches more
		// often than random ones.
		if p.spans != nil {
			var b strings.Builder
			for _, sp := range p.spans {
				for c := byte(0); c < 0x80 && b.Len() < 64; c++ {
					if sp.set.has(c) {
						b.WriteByte(c)
						break
					}
				}
			}
			u := b.String()
			if got, want := p.MatchString(u), p.re.MatchString(u); got != want {
				t.Fatalf("%q on %q: %v, regexp says %v", expr, u, got, want)
			}
		}
	})
}
