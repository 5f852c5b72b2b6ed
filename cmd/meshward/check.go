package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshward/meshward/extauthz"
	"github.com/meshward/meshward/policy"
)

// runCheck decides one CheckRequest offline, exactly as the server would.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	path := fs.String("config", "", "configuration file (default: the embedded quickstart)")
	reqPath := fs.String("request", "", "CheckRequest as protobuf JSON (required)")
	explain := fs.Bool("explain", false, "print every rule considered and why it matched or failed (to stderr)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if *reqPath == "" {
		return errors.New("check: --request is required")
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(*reqPath)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(raw, req); err != nil {
		return fmt.Errorf("check: %s: %w", *reqPath, err)
	}
	rev, err := compilePolicy(cfg)
	if err != nil {
		return err
	}
	store, err := policy.NewStore(policy.StoreOptions{})
	if err != nil {
		return err
	}
	if err := store.Reload(ctx, func() (*policy.Revision, error) { return rev, nil }); err != nil {
		return err
	}
	srv, err := extauthz.New(cfg.Authz.Server, cfg.TrustDomain, store, extauthz.Options{ReadFile: configFileReader(cfg)})
	if err != nil {
		return err
	}
	resp, err := srv.Check(ctx, req)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if *explain {
		if err := writeExplain(ctx, stderr, srv, rev, req, resp, cfg.TrustDomain); err != nil {
			return err
		}
	}
	raw, err = protojson.Marshal(resp)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	// protojson's spacing is deliberately unstable; indent it ourselves.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("check: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", out.Bytes()); err != nil {
		return err
	}
	if resp.GetStatus().GetCode() != int32(codes.OK) {
		return &exitError{code: 2, err: errors.New("denied")}
	}
	return nil
}

func writeExplain(ctx context.Context, w io.Writer, srv *extauthz.Server, rev *policy.Revision, req *authv3.CheckRequest, resp *authv3.CheckResponse, trustDomain string) error {
	var b strings.Builder
	explain(ctx, &b, srv, rev, req)
	b.WriteString(verdict(req, resp, trustDomain))
	_, err := io.WriteString(w, b.String())
	return err
}

// verdict is the last line of an explanation: the decision the server
// made (allow or deny), its HTTP status, the rule and the reason, and for a
// deny its message; for a 401, the identity seen and the trust domain
// expected.
func verdict(req *authv3.CheckRequest, resp *authv3.CheckResponse, trustDomain string) string {
	meta := resp.GetDynamicMetadata().GetFields()
	rule := cmp.Or(meta[extauthz.MetaRule].GetStringValue(), "-")
	reason := meta[extauthz.MetaReason].GetStringValue()
	var b strings.Builder
	if resp.GetStatus().GetCode() == int32(codes.OK) {
		fmt.Fprintf(&b, "verdict: allow 200 rule=%s reason=%s", rule, cmp.Or(reason, policy.ReasonAllowed))
		if meta[extauthz.MetaDryRun].GetBoolValue() {
			b.WriteString(" (dry run: the policy denied)")
		}
		b.WriteString("\n")
		return b.String()
	}
	dr := resp.GetDeniedResponse()
	var body struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(dr.GetBody()), &body); err != nil {
		// A JSON-RPC route's deny is a JSON-RPC error response.
		var rpc struct {
			Error struct {
				Message string `json:"message"`
				Data    struct {
					Error string `json:"error"`
				} `json:"data"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(dr.GetBody()), &rpc) == nil {
			body.Error, body.Message = rpc.Error.Data.Error, rpc.Error.Message
		}
	} // a Rego body may be anything: the status still says deny
	status := int(dr.GetStatus().GetCode())
	fmt.Fprintf(&b, "verdict: deny %d rule=%s reason=%s", status, rule, cmp.Or(reason, body.Error, "-"))
	if status == 401 {
		src := req.GetAttributes().GetSource()
		seen := src.GetPrincipal()
		switch {
		case seen == "" && src.GetCertificate() != "":
			seen = "(peer certificate only)"
		case seen == "":
			seen = "(none)"
		default:
			seen = strconv.Quote(seen)
		}
		fmt.Fprintf(&b, " identity=%s trustDomain=%q", seen, trustDomain)
	}
	if body.Message != "" {
		fmt.Fprintf(&b, ": %s", body.Message)
	}
	b.WriteString("\n")
	return b.String()
}

// explain writes why each rule and the Rego step decided as they did.
func explain(ctx context.Context, w *strings.Builder, srv *extauthz.Server, rev *policy.Revision, req *authv3.CheckRequest) {
	in, d, ok := srv.Input(req)
	fmt.Fprintf(w, "policy revision %s\n", rev.ID())
	if !ok {
		fmt.Fprintf(w, "rejected before policy: %d %s: %s\n", d.Status, d.Reason, d.Message)
		return
	}
	fmt.Fprintf(w, "request: %s %s host=%q principal=%s\n", in.Method, in.Path, in.Host, in.Principal)
	for _, st := range rev.Explain(in) {
		verdict := "skipped"
		switch {
		case st.Matched && st.Satisfied:
			verdict = "matched, satisfied"
		case st.Matched:
			verdict = "matched, failed"
		}
		dry := ""
		if st.DryRun {
			dry = " (dry-run)"
		}
		fmt.Fprintf(w, "  %-5s %s%s: %s: %s\n", st.Effect, st.Rule, dry, verdict, st.Why)
	}
	rs, ok := rev.ExplainRego(ctx, in)
	if !ok {
		return
	}
	switch {
	case rs.Err != "":
		fmt.Fprintf(w, "rego (mode %s): error, denied with statusOnError: %s\n", rs.Mode, rs.Err)
	case rs.Allow:
		fmt.Fprintf(w, "rego (mode %s): allow\n", rs.Mode)
	default:
		status := rs.Status
		if status == 0 {
			status = 403
		}
		fmt.Fprintf(w, "rego (mode %s): deny %d %s\n", rs.Mode, status, cmp.Or(rs.Code, policy.ReasonRegoDenied))
	}
	if mu := rs.Mutations; mu != nil {
		if b, err := json.Marshal(mu); err == nil {
			fmt.Fprintf(w, "  rego mutations: %s\n", b)
		}
	}
}
