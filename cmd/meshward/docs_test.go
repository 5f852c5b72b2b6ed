package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository, seen from this package's folder.
var repoRoot = filepath.Join("..", "..")

var (
	mdLink     = regexp.MustCompile(`\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	mdHeading  = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*#*\s*$`)
	inlineCode = regexp.MustCompile("`[^`\n]*`")
)

// stripCode removes fenced code blocks and, with spans, inline code
// spans: their brackets are not links, their # lines not headings.
func stripCode(md string, spans bool) string {
	var b strings.Builder
	fenced := false
	for line := range strings.SplitSeq(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			b.WriteString("\n")
			continue
		}
		if fenced {
			b.WriteString("\n")
			continue
		}
		if spans {
			line = inlineCode.ReplaceAllString(line, "``")
		}
		b.WriteString(line)
		b.WriteString("\n")
	}
	return b.String()
}

// anchor is GitHub's id for a heading: lower case, punctuation but - and _
// dropped, spaces as -.
func anchor(heading string) string {
	heading = inlineCode.ReplaceAllStringFunc(heading, func(s string) string { return strings.Trim(s, "`") })
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range mdHeading.FindAllStringSubmatch(stripCode(string(data), false), -1) {
		a := anchor(m[1])
		if out[a] { // GitHub numbers repeated headings: x, x-1, x-2, ...
			i := 1
			for out[a+"-"+strconv.Itoa(i)] {
				i++
			}
			a += "-" + strconv.Itoa(i)
		}
		out[a] = true
	}
	return out
}

// docFiles are the documents a new user reads: README.md, SECURITY.md and
// docs/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, filepath.Join(repoRoot, "README.md"), filepath.Join(repoRoot, "SECURITY.md"))
	return files
}

// TestDocLinksResolve checks that every relative link in the docs names a
// file or folder of the repository and, with a #fragment into a Markdown
// file, one of its headings.
func TestDocLinksResolve(t *testing.T) {
	checked := 0
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s: %v (the docs must exist)", file, err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(stripCode(string(data), true), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			p, frag, _ := strings.Cut(target, "#")
			dest := file
			if p != "" {
				dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(p))
				if _, err := os.Stat(dest); err != nil {
					t.Errorf("%s: link %q: %v", file, target, err)
					continue
				}
			}
			if frag != "" && strings.HasSuffix(dest, ".md") && !anchors(t, dest)[frag] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", file, target, frag, dest)
			}
		}
	}
	if checked < 20 {
		t.Errorf("checked only %d relative links: is the link pattern still right?", checked)
	}
}

// TestDocsNameNoOutsideFiles catches references to files outside the
// repository (a fresh clone has no ../shared) written as code, not links.
func TestDocsNameNoOutsideFiles(t *testing.T) {
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "../shared/") {
				t.Errorf("%s:%d: names ../shared/, which a clone does not have: %s", file, i+1, line)
			}
		}
	}
}

func TestAnchor(t *testing.T) {
	tests := map[string]string{
		"How a body is validated, fast": "how-a-body-is-validated-fast",
		"ext_authz":                     "ext_authz",
		"Bundles from a URL":            "bundles-from-a-url",
		"`authz.rego` keys":             "authzrego-keys",
		"Knobs: the `envoy` section":    "knobs-the-envoy-section",
	}
	for in, want := range tests {
		if got := anchor(in); got != want {
			t.Errorf("anchor(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCommandTableListsEveryFlag: docs/configuration.md's command table
// names every flag of every command, as --flag.
func TestCommandTableListsEveryFlag(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(data), "## Command line")
	if !ok {
		t.Fatal("docs/configuration.md has no Command line section")
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	total := 0
	for _, cmd := range [][]string{{"serve"}, {"validate"}, {"check"}, {"bootstrap"}, {"policy", "test"}, {"audit", "verify"}, {"mcp", "import"}, {"quarantine"}, {"release"}, {"version"}} {
		code, out, errs := runCmd(t, append(cmd, "-h")...)
		if code != 0 {
			t.Fatalf("%s -h: exit %d: %s", cmd, code, errs)
		}
		row := ""
		for line := range strings.SplitSeq(table, "\n") {
			if strings.HasPrefix(line, "| `meshward "+strings.Join(cmd, " ")) {
				row = line
			}
		}
		if row == "" {
			t.Errorf("no row for meshward %s", strings.Join(cmd, " "))
			continue
		}
		for _, m := range flagLine.FindAllStringSubmatch(out, -1) {
			total++
			if !strings.Contains(row, "`--"+m[1]) {
				t.Errorf("meshward %s: flag --%s is not in its row of the command table", strings.Join(cmd, " "), m[1])
			}
		}
	}
	if total < 15 {
		t.Errorf("found only %d flags in the commands' help: is -h still printed to stdout?", total)
	}
}
