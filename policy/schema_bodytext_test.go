package policy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshward/meshward/policy"
)

// TestSchemaStepBodyText: a body given as Input.BodyText (as extauthz
// passes Envoy's body field) is checked exactly like the same bytes in
// Input.Body, and BodyText wins when both are set.
func TestSchemaStepBodyText(t *testing.T) {
	cfg, dir := schemaStepConfig(t)
	rev, err := policy.Compile(&cfg, "mesh.local", policy.Options{Dir: dir,
		NewBodyChecker: policy.NewSchemaBodyChecker(policy.BodyLimits{MaxDepth: 8, MaxValues: 100})})
	if err != nil {
		t.Fatal(err)
	}
	tooHigh := strings.Replace(schemaTaskBody, `"priority":3`, `"priority":12`, 1)
	tests := []struct {
		name       string
		body, text string
		status     int
		code       string
	}{
		{"valid text", "", schemaTaskBody, 200, ""},
		{"violation in text", "", tooHigh, 400, "schema_violation"},
		{"duplicate keys in text", "", `{"role":"user","role":"admin"}`, 400, "invalid_json"},
		{"case-variant keys in text", "", `{"role":"user","Role":"admin"}`, 400, "invalid_json"},
		{"invalid UTF-8 in text", "", "{\"type\":\"\xff\"}", 400, "invalid_json"},
		{"too deep text", "", strings.Repeat("[", 9) + strings.Repeat("]", 9), 400, "invalid_json"},
		{"too many values in text", "", "[" + strings.Repeat("0,", 100) + "0]", 400, "body_too_large"},
		{"text is what is checked", schemaTaskBody, tooHigh, 400, "schema_violation"},
		{"no body", "", "", 400, "invalid_json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			in := schemaInput("/v1/tasks", tt.body, nil)
			if tt.body == "" {
				in.Body = nil
			}
			in.BodyText = tt.text
			d := rev.Decide(ctx, in)
			if d.Status != tt.status || d.Code != tt.code || d.Allow != (tt.status == 200) || d.Err != nil {
				t.Fatalf("Decide = allow %v status %d code %q err %v (%s); want status %d code %q",
					d.Allow, d.Status, d.Code, d.Err, d.Message, tt.status, tt.code)
			}
		})
	}
}
