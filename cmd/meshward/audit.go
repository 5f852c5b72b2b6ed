package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshward/meshward/cmd/meshward/internal/config"
	"github.com/meshward/meshward/extauthz/audit"
)

const auditUsage = `Usage: meshward audit verify [--rotated] [--config FILE] [--seal-key FILE] [--key FILE] FILE...
       meshward audit read   [--rotated] [--key FILE] [--key-store DIR] FILE...
       meshward audit query  [--rotated] [--key FILE] [--key-store DIR] [filters] [--format table|json] FILE...
       meshward audit forget --key FILE --key-store DIR [--reason TEXT] SUBJECT
       meshward audit pubkey SEED_FILE

verify checks audit logs: every line is a whole JSON record; within each
process, seq has no gap; the hash chain of a file sink is unbroken and
every seal covers it, signed with the seal key (--seal-key: the HMAC key,
or with --seal-alg ed25519 the public key); the log ends with a final
seal, or with a recent one while the writer runs. Encrypted segments are
decrypted with --key. --config takes the keys that flags do not give from
a configuration's audit section, through its secrets source. FILEs are read as one log in the order given
(rotated files oldest first). Prints a summary; exits 1 on any problem.

read prints every record as a JSON line, decrypted, after the same checks
(exits 1 on a problem, after printing what it could read); with
--key-store, personal fields are decrypted with their data subject's key,
or shown as forgotten:<subject id> when it was destroyed.

query prints the records that match every filter given (--principal,
--subject, --decision, --reason, --kind, --tool, --since, --until; *
matches any text) as a table or, with --format json, as JSON lines, after
the same checks as read (problems go to stderr and exit 1).

pubkey prints the Ed25519 public key (hex) of a seal seed (seal.algorithm:
ed25519), for verifiers that must not hold the signing key.

forget destroys the key of the data subject SUBJECT (the end-user JWT sub)
in the key store (audit.shred.keyStore), so that the subject's fields in
every record become unreadable while the log still verifies. The running
server writes a subject_forgotten event to the audit log within 10s (or
when it next starts). Prints the subject id the records name.
`

// runAudit dispatches `meshward audit <subcommand>`.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		_, _ = io.WriteString(stderr, auditUsage) // the exit code reports the misuse
		return errUsage
	}
	if isHelp(args[0]) {
		_, err := io.WriteString(stdout, auditUsage)
		return err
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "read":
		return runAuditRead(ctx, args[1:], stdout, stderr)
	case "query":
		return runAuditQuery(ctx, args[1:], stdout, stderr)
	case "pubkey":
		return runAuditPubkey(args[1:], stdout, stderr)
	case "forget":
		return runAuditForget(ctx, args[1:], stdout, stderr)
	default:
		_, _ = io.WriteString(stderr, auditUsage)
		return fmt.Errorf("audit: unknown subcommand %q", args[0])
	}
}

// auditFlags are the flags every audit subcommand reading logs takes.
type auditFlags struct {
	rotated  *bool
	sealKey  *string
	sealAlg  *string
	key      *string
	keyStore *string
	config   *string
	encKey   []byte // read by options
}

func newAuditFlags(fs *flag.FlagSet, store bool) *auditFlags {
	a := &auditFlags{
		rotated: fs.Bool("rotated", false, "read each FILE's rotated files (FILE.<time>), oldest first, before FILE"),
		key:     fs.String("key", "", "file holding the encryption key (32 bytes raw, hex or base64) of encrypted segments"),
	}
	a.sealKey = fs.String("seal-key", "", "file holding the seal key: the HMAC key, or the Ed25519 public key with --seal-alg ed25519")
	a.sealAlg = fs.String("seal-alg", audit.SealHMAC, "seal algorithm: hmac-sha256 or ed25519")
	a.config = fs.String("config", "", "take the keys not given by flags (and the key store) from this configuration's audit section, through its secrets source as serve does")
	a.keyStore = new(string)
	if store {
		a.keyStore = fs.String("key-store", "", "folder of data subject keys (audit.shred.keyStore): decrypt personal fields (needs --key)")
	}
	return a
}

// unshredder opens the key store given with --key-store, or returns nil.
func (a *auditFlags) unshredder() (*audit.Unshredder, error) {
	if *a.keyStore == "" {
		return nil, nil
	}
	if a.encKey == nil {
		return nil, errors.New("--key-store needs --key")
	}
	return audit.NewUnshredder(*a.keyStore, a.encKey)
}

// paths lists the files to read, rotated files first with --rotated.
func (a *auditFlags) paths(files []string) ([]string, error) {
	var paths []string
	for _, f := range files {
		if *a.rotated {
			r, err := audit.RotatedFiles(f)
			if err != nil {
				return nil, err
			}
			paths = append(paths, r...)
		}
		paths = append(paths, f)
	}
	return paths, nil
}

func (a *auditFlags) options(ctx context.Context) (audit.VerifyOptions, error) {
	var o audit.VerifyOptions
	if err := a.fromConfig(ctx, &o); err != nil {
		return o, err
	}
	if *a.sealKey != "" {
		k, err := os.ReadFile(*a.sealKey)
		if err != nil {
			return o, fmt.Errorf("--seal-key: %w", err)
		}
		if o.Seal, err = audit.NewSealVerifier(*a.sealAlg, k); err != nil {
			return o, fmt.Errorf("--seal-key: %w", err)
		}
	}
	if *a.key != "" {
		k, err := os.ReadFile(*a.key)
		if err != nil {
			return o, fmt.Errorf("--key: %w", err)
		}
		o.EncryptionKey = k
	}
	a.encKey = o.EncryptionKey
	return o, nil
}

// fromConfig reads the seal and encryption keys that flags do not give,
// and the key store, from --config: key files relative to it, keySecret
// through its secrets source. An Ed25519 seed gives its public key.
func (a *auditFlags) fromConfig(ctx context.Context, o *audit.VerifyOptions) error {
	if *a.config == "" {
		return nil
	}
	cfg, err := config.Load(*a.config)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	read := configFileReader(cfg)
	get := func(file, secret string) ([]byte, error) {
		switch {
		case file != "":
			return read(file)
		case secret != "":
			return secretKeySource(cfg, secret, slog.New(slog.DiscardHandler))(ctx)
		}
		return nil, nil
	}
	ac := cfg.Audit
	if *a.sealKey == "" {
		k, err := get(ac.Seal.KeyFile, ac.Seal.KeySecret)
		if err != nil {
			return fmt.Errorf("--config: seal key: %w", err)
		}
		if k != nil {
			alg := ac.Seal.Algorithm
			if alg == audit.SealEd25519 {
				pub, err := audit.SealPublicKey(k)
				if err != nil {
					return fmt.Errorf("--config: seal key: %w", err)
				}
				k = []byte(pub)
			}
			if o.Seal, err = audit.NewSealVerifier(alg, k); err != nil {
				return fmt.Errorf("--config: %w", err)
			}
		}
	}
	if *a.key == "" {
		k, err := get(ac.Encryption.KeyFile, ac.Encryption.KeySecret)
		if err != nil {
			return fmt.Errorf("--config: encryption key: %w", err)
		}
		o.EncryptionKey = k
	}
	if *a.keyStore == "" && ac.Shred.KeyStore != "" {
		*a.keyStore = ac.Shred.KeyStore // as serve uses it: relative to the working folder
	}
	return nil
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit verify", stderr)
	af := newAuditFlags(fs, false)
	setUsage(fs, auditUsage+"\nFlags:\n")
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("audit verify: a FILE is required")
	}
	paths, err := af.paths(files)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	opts, err := af.options(ctx)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	s, err := audit.VerifyFilesWith(opts, paths...)
	if s == nil {
		return err
	}
	if _, werr := io.WriteString(stdout, formatSummary(paths, s)); werr != nil {
		return werr
	}
	if err != nil {
		return fmt.Errorf("audit verify: %d problem(s)", s.ProblemCount)
	}
	return nil
}

func formatSummary(paths []string, s *audit.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "files:      %s\n", strings.Join(paths, " "))
	fmt.Fprintf(&b, "lines:      %d\n", s.Lines)
	fmt.Fprintf(&b, "records:    %d (%d processes)\n", s.Records, s.Processes)
	fmt.Fprintf(&b, "kinds:      %s\n", formatCounts(s.Kinds))
	fmt.Fprintf(&b, "decisions:  %s\n", formatCounts(s.Decisions))
	b.WriteString("top denied principals:\n")
	for _, c := range s.TopDenied {
		fmt.Fprintf(&b, "  %8d  %s\n", c.Count, c.Value)
	}
	b.WriteString("top deny reasons:\n")
	for _, c := range s.TopReasons {
		fmt.Fprintf(&b, "  %8d  %s\n", c.Count, c.Value)
	}
	fmt.Fprintf(&b, "chain:      %s\n", formatChain(s))
	fmt.Fprintf(&b, "warnings:   %d\n", len(s.Warnings))
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "  %s\n", w)
	}
	fmt.Fprintf(&b, "problems:   %d\n", s.ProblemCount)
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	if more := s.ProblemCount - len(s.Problems); more > 0 {
		fmt.Fprintf(&b, "  ... and %d more\n", more)
	}
	return b.String()
}

func formatChain(s *audit.Summary) string {
	if s.Segments == 0 {
		return "none (no file sink segment header)"
	}
	var parts []string
	parts = append(parts, fmt.Sprintf("%d segments, %d seals", s.Segments, s.Seals))
	if s.SealsChecked {
		parts = append(parts, "signatures checked")
	} else {
		parts = append(parts, "signatures NOT checked")
	}
	if s.Encrypted > 0 {
		parts = append(parts, fmt.Sprintf("%d records decrypted", s.Encrypted))
	}
	if s.Unreadable > 0 {
		parts = append(parts, fmt.Sprintf("%d records encrypted, not read (no key)", s.Unreadable))
	}
	if s.Complete {
		parts = append(parts, "ends with a final seal")
	} else {
		parts = append(parts, fmt.Sprintf("%d records after the last seal", s.Unsealed))
	}
	if s.Anchor != "" {
		parts = append(parts, "continues from "+s.Anchor)
	}
	if s.Head != "" {
		parts = append(parts, "head "+s.Head)
	}
	return strings.Join(parts, "; ")
}

func runAuditRead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit read", stderr)
	af := newAuditFlags(fs, true)
	setUsage(fs, auditUsage+"\nFlags:\n")
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("audit read: a FILE is required")
	}
	paths, err := af.paths(files)
	if err != nil {
		return fmt.Errorf("audit read: %w", err)
	}
	opts, err := af.options(ctx)
	if err != nil {
		return fmt.Errorf("audit read: %w", err)
	}
	un, err := af.unshredder()
	if err != nil {
		return fmt.Errorf("audit read: %w", err)
	}
	w := bufio.NewWriter(stdout)
	var werr error
	opts.Record = func(line []byte) {
		if un != nil {
			line = un.Line(line)
		}
		if werr == nil {
			_, werr = w.Write(line)
		}
		if werr == nil {
			werr = w.WriteByte('\n')
		}
	}
	s, err := audit.VerifyFilesWith(opts, paths...)
	if ferr := w.Flush(); werr == nil {
		werr = ferr
	}
	if s == nil {
		return fmt.Errorf("audit read: %w", err)
	}
	if werr != nil {
		return werr
	}
	if err != nil {
		for _, p := range s.Problems {
			_, _ = fmt.Fprintf(stderr, "%s\n", p)
		}
		return fmt.Errorf("audit read: %d problem(s); run audit verify for the summary", s.ProblemCount)
	}
	return nil
}

func runAuditQuery(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit query", stderr)
	af := newAuditFlags(fs, true)
	var q audit.Query
	fs.StringVar(&q.Principal, "principal", "", "caller's SPIFFE ID (* matches any text)")
	fs.StringVar(&q.Subject, "subject", "", "end-user subject (decrypted with --key-store)")
	fs.StringVar(&q.Decision, "decision", "", "allow, deny or error")
	fs.StringVar(&q.Reason, "reason", "", "reason code, e.g. missing_role")
	fs.StringVar(&q.Kind, "kind", "", "record kind, e.g. decision, authz_denial, xds_nack")
	fs.StringVar(&q.Tool, "tool", "", "MCP tool or JSON-RPC method")
	since := fs.String("since", "", "records at or after: RFC 3339 time, or a duration back from now (e.g. 2h)")
	until := fs.String("until", "", "records before: RFC 3339 time, or a duration back from now")
	format := fs.String("format", "table", "table or json")
	setUsage(fs, auditUsage+"\nFlags:\n")
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("audit query: a FILE is required")
	}
	if *format != "table" && *format != "json" {
		return fmt.Errorf("audit query: --format: %q is not table or json", *format)
	}
	switch q.Decision {
	case "", "allow", "deny", "error":
	default:
		return fmt.Errorf("audit query: --decision: %q is not allow, deny or error", q.Decision)
	}
	now := time.Now()
	if q.Since, err = parseWhen(*since, now); err != nil {
		return fmt.Errorf("audit query: --since: %w", err)
	}
	if q.Until, err = parseWhen(*until, now); err != nil {
		return fmt.Errorf("audit query: --until: %w", err)
	}
	paths, err := af.paths(files)
	if err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	opts, err := af.options(ctx)
	if err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	un, err := af.unshredder()
	if err != nil {
		return fmt.Errorf("audit query: %w", err)
	}
	bw := bufio.NewWriter(stdout)
	tw := tabwriter.NewWriter(bw, 0, 0, 2, ' ', 0)
	if *format == "table" {
		_, _ = fmt.Fprintln(tw, "TIME\tKIND\tPRINCIPAL\tSUBJECT\tDECISION\tREASON\tSTATUS\tMETHOD\tPATH\tTOOL")
	}
	matched := 0
	opts.Record = func(line []byte) {
		if un != nil {
			line = un.Line(line)
		}
		r, ok := q.Match(line)
		if !ok {
			return
		}
		matched++
		if *format == "json" {
			_, _ = bw.Write(line) // a write error is reported by bw.Flush
			_ = bw.WriteByte('\n')
			return
		}
		tool := r.MCPTool
		if tool == "" {
			tool = r.JSONRPCMethod
		}
		status := ""
		if r.Status != 0 {
			status = strconv.Itoa(r.Status)
		}
		_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format(time.RFC3339), cell(r.Kind), cell(r.Principal),
			cell(r.Subject), cell(r.Decision), cell(r.Reason), cell(status), cell(r.Method), cell(r.Path), cell(tool))
	}
	s, verr := audit.VerifyFilesWith(opts, paths...)
	if *format == "table" {
		_ = tw.Flush() // a write error is reported by bw.Flush
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if s == nil {
		return fmt.Errorf("audit query: %w", verr)
	}
	_, _ = fmt.Fprintf(stderr, "%d of %d records matched\n", matched, s.Records)
	if verr != nil {
		for _, p := range s.Problems {
			_, _ = fmt.Fprintf(stderr, "%s\n", p)
		}
		return fmt.Errorf("audit query: %d problem(s); run audit verify for the summary", s.ProblemCount)
	}
	return nil
}

// cell keeps a table cell on one line and shows an empty one as -.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\t' {
			return ' '
		}
		return r
	}, s)
}

// parseWhen reads an RFC 3339 time, or a duration back from now.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	var d audit.Duration
	if err := d.UnmarshalText([]byte(s)); err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time or a duration like 2h or 7d", s)
	}
	return now.Add(-time.Duration(d)), nil
}

func runAuditPubkey(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit pubkey", stderr)
	setUsage(fs, auditUsage)
	files, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(files) != 1 {
		return errors.New("audit pubkey: one SEED_FILE is required")
	}
	seed, err := os.ReadFile(files[0])
	if err != nil {
		return fmt.Errorf("audit pubkey: %w", err)
	}
	pub, err := audit.SealPublicKey(seed)
	if err != nil {
		return fmt.Errorf("audit pubkey: %w", err)
	}
	_, err = fmt.Fprintln(stdout, pub)
	return err
}

func runAuditForget(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("audit forget", stderr)
	key := fs.String("key", "", "file holding the encryption key (audit.encryption), which wraps the subject keys (required)")
	store := fs.String("key-store", "", "folder of data subject keys: audit.shred.keyStore (required)")
	reason := fs.String("reason", "", "why, written in the subject_forgotten event (e.g. a ticket number)")
	setUsage(fs, auditUsage+"\nFlags:\n")
	subjects, help, err := parseArgs(fs, args)
	if help || err != nil {
		return err
	}
	if len(subjects) != 1 || subjects[0] == "" {
		return errors.New("audit forget: one SUBJECT is required")
	}
	if *key == "" || *store == "" {
		return errors.New("audit forget: --key and --key-store are required")
	}
	k, err := os.ReadFile(*key)
	if err != nil {
		return fmt.Errorf("audit forget: --key: %w", err)
	}
	id, err := audit.Forget(*store, k, subjects[0], *reason)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "forgotten: subject id %s (key destroyed; the server audits it as %s)\n", id, audit.KindSubjectForgotten)
	return err
}

func formatCounts(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
