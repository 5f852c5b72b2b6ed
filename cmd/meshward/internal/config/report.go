package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// lineError is one problem of a configuration file, with the line of the
// key it is about (0: unknown).
type lineError struct {
	msg  string
	line int
}

func (e *lineError) Error() string {
	if e.line == 0 {
		return e.msg
	}
	return e.msg + " (line " + strconv.Itoa(e.line) + ")"
}

// fieldLines maps the field path of every key and list item in a YAML
// tree (authz.rules[2].match) to its line.
func fieldLines(n *yaml.Node) map[string]int {
	lines := map[string]int{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				key := n.Content[i]
				if key.Value == "<<" {
					continue
				}
				p := join(path, key.Value)
				if _, seen := lines[p]; !seen {
					lines[p] = key.Line
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				lines[p] = c.Line
				walk(c, p)
			}
		}
	}
	walk(n, "")
	return lines
}

// lineOf is the line of the deepest key that a message's leading field
// path (up to the first ": ") names or lies under; 0 when none does.
func lineOf(msg string, lines map[string]int) int {
	path, _, ok := strings.Cut(msg, ": ")
	if !ok {
		path, _, _ = strings.Cut(msg, ":")
	}
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// Flatten splits errors.Join trees into their leaves, so that each problem
// gets its own line number (or object). An error is taken apart only when
// its text is exactly its parts joined by newlines, which is what
// errors.Join makes, so a wrapped error keeps its prefix.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		parts := j.Unwrap()
		texts := make([]string, 0, len(parts))
		for _, p := range parts {
			texts = append(texts, p.Error())
		}
		if strings.Join(texts, "\n") == err.Error() {
			var out []error
			for _, p := range parts {
				out = append(out, Flatten(p)...)
			}
			return out
		}
	}
	return []error{err}
}

// withLines gives each problem of err the line of the key its field path
// names.
func withLines(err error, lines map[string]int) []error {
	var out []error
	for _, e := range Flatten(err) {
		out = append(out, &lineError{msg: e.Error(), line: lineOf(e.Error(), lines)})
	}
	return out
}

// pathAt is the field path of the key on line l, when one key path there
// holds all the others (`a: {b: x}` on one line is a.b); "" when the line
// has no key or several unrelated ones.
func pathAt(l int, lines map[string]int) string {
	deepest := ""
	for p, pl := range lines {
		if pl == l && len(p) > len(deepest) {
			deepest = p
		}
	}
	for p, pl := range lines {
		if pl == l && !strings.HasPrefix(deepest, p) {
			return ""
		}
	}
	return deepest
}

// typeErrors turns yaml.v3's "line N: cannot unmarshal ..." messages into
// lineErrors, named by field path where the line says which; ok is false
// for any other decoding error.
func typeErrors(err error, lines map[string]int) (errs []error, ok bool) {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil, false
	}
	for _, m := range te.Errors {
		le := &lineError{msg: m}
		if rest, found := strings.CutPrefix(m, "line "); found {
			if n, msg, found := strings.Cut(rest, ": "); found {
				if l, err := strconv.Atoi(n); err == nil {
					le.msg, le.line = msg, l
					if p := pathAt(l, lines); p != "" {
						le.msg = p + ": " + msg
					}
				}
			}
		}
		errs = append(errs, le)
	}
	return errs, true
}

// sortByLine orders problems by line; those without one go last, each
// group in the order found.
func sortByLine(errs []error) {
	slices.SortStableFunc(errs, func(a, b error) int {
		la, lb := errLine(a), errLine(b)
		switch {
		case la == lb:
			return 0
		case la == 0:
			return 1
		case lb == 0:
			return -1
		}
		return cmp.Compare(la, lb)
	})
}

func errLine(err error) int {
	var le *lineError
	if errors.As(err, &le) {
		return le.line
	}
	return 0
}

// namedFile is a file a configuration names, read when it is loaded.
type namedFile struct {
	path string // field path, e.g. authz.schemas[0].file
	name string // as written
}

// loadedFiles lists the files that compiling the configuration reads, so
// that a missing one is reported with the rest, by field path. Files read
// later and re-read while serving (authz.tls, Vault auth files) are left
// to the component that reads them.
func (c *Config) loadedFiles() []namedFile {
	var out []namedFile
	add := func(path, name string) {
		if name != "" {
			out = append(out, namedFile{path, name})
		}
	}
	p := &c.Authz.Policy
	for i, s := range p.Schemas {
		add(fmt.Sprintf("authz.schemas[%d].file", i), s.File)
	}
	if j := p.JSONRPC; j != nil {
		add("authz.jsonrpc.toolsFile", j.ToolsFile)
	}
	if r := p.Rego; r != nil {
		for i, f := range r.Files {
			add(fmt.Sprintf("authz.rego.files[%d]", i), f)
		}
		add("authz.rego.bundle", r.Bundle)
		if t := r.BundleTLS; t != nil {
			add("authz.rego.bundleTLS.ca", t.CA)
			add("authz.rego.bundleTLS.cert", t.Cert)
			add("authz.rego.bundleTLS.key", t.Key)
		}
		if v := r.Verification; v != nil {
			add("authz.rego.verification.keyFile", v.KeyFile)
		}
	}
	add("audit.redaction.keyFile", c.Audit.Redaction.KeyFile)
	names := make([]string, 0, len(c.Secrets.Local.Secrets))
	for n := range c.Secrets.Local.Secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		add("secrets.local.secrets."+n, c.Secrets.Local.Secrets[n])
	}
	add("secrets.vault.tlsCA", c.Secrets.Vault.TLSCA)
	return out
}

// checkFiles opens every file the configuration reads at load, the way
// the loaders do (absolute names from disk, relative ones from c.Dir), and
// reports each that cannot be opened by its field path, saying where
// relative names were looked for.
func (c *Config) checkFiles(dirName string, lines map[string]int) []error {
	var errs []error
	for _, f := range c.loadedFiles() {
		var err error
		if filepath.IsAbs(f.name) {
			var fh *os.File
			if fh, err = os.Open(f.name); err == nil {
				_ = fh.Close() // opened only to see that it can be
			}
		} else {
			rel := filepath.ToSlash(filepath.Clean(f.name))
			if !fs.ValidPath(rel) {
				err = fmt.Errorf("%q leaves the configuration's folder: use an absolute name", f.name)
			} else {
				var fh fs.File
				if fh, err = c.Dir.Open(rel); err == nil {
					_ = fh.Close()
				}
			}
			if err != nil {
				err = fmt.Errorf("%w (relative names are resolved from %s)", err, dirName)
			}
		}
		if err != nil {
			errs = append(errs, &lineError{msg: f.path + ": " + err.Error(), line: lineOf(f.path+":", lines)})
		}
	}
	return errs
}
