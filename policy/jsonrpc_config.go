package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshward/meshward/policy/internal/body"
	"github.com/meshward/meshward/policy/internal/schema"
)

// JSONRPCConfig makes routes JSON-RPC aware (MCP, A2A): their bodies are
// read as JSON-RPC 2.0 messages, rules can match the method and the MCP
// tool, and MCP tool arguments are validated against the tool's
// inputSchema.
type JSONRPCConfig struct {
	// Routes are the HTTP routes whose POST bodies are JSON-RPC.
	Routes []JSONRPCRoute `yaml:"routes"`
	// Batch is what a JSON array of messages gets: "each" (default)
	// decides every element and allows only when all are allowed;
	// "deny" refuses every batch with 400.
	Batch string `yaml:"batch"`
	// MaxBatch is the most elements a batch may hold (400 above).
	// Default 32.
	MaxBatch int `yaml:"maxBatch"`
	// Tools are MCP tool input schemas, inline.
	Tools []ToolConfig `yaml:"tools"`
	// ToolsFile is a saved MCP tools/list result (as `meshward mcp
	// import` writes it, or the raw JSON-RPC response), relative to the
	// configuration file.
	ToolsFile string `yaml:"toolsFile"`
	// UnknownTool is what a tools/call of a tool with no schema gets on
	// an MCP route: "deny" (default) or "allow" (arguments unchecked).
	UnknownTool string `yaml:"unknownTool"`
}

// JSONRPCRoute selects requests whose bodies are JSON-RPC. Only POST is
// JSON-RPC; other methods on the route are decided as plain HTTP.
type JSONRPCRoute struct {
	// Hosts, as in Match; empty matches every host.
	Hosts []string `yaml:"hosts"`
	// Exactly one of Path and PathPrefix.
	Path       string `yaml:"path"`
	PathPrefix string `yaml:"pathPrefix"`
	// Protocol is "mcp" (tools/call arguments validated), "a2a" or
	// "jsonrpc". Default "mcp".
	Protocol string `yaml:"protocol"`
}

// ToolConfig is one MCP tool's argument schema.
type ToolConfig struct {
	Name string `yaml:"name"`
	// InputSchema is the JSON Schema of params.arguments, as the MCP
	// server's tools/list gives it.
	InputSchema map[string]any `yaml:"inputSchema"`
}

// JSONRPCMatch narrows a rule to JSON-RPC messages (on a route of
// authz.jsonrpc.routes). At most one of Method and MethodPrefix.
type JSONRPCMatch struct {
	// Method is the exact JSON-RPC method, e.g. tools/call, message/send.
	Method string `yaml:"method"`
	// MethodPrefix matches methods starting with it, e.g. resources/.
	MethodPrefix string `yaml:"methodPrefix"`
	// Tool is the MCP tool (params.name of tools/call); it implies
	// method tools/call.
	Tool string `yaml:"tool"`
}

// Values of JSONRPCConfig and JSONRPCRoute fields.
const (
	BatchEach         = "each"
	BatchDeny         = "deny"
	ProtocolMCP       = "mcp"
	ProtocolA2A       = "a2a"
	ProtocolJSONRPC   = "jsonrpc"
	UnknownToolDeny   = "deny"
	UnknownToolAllow  = "allow"
	DefaultMaxBatch   = 32
	MethodToolsCall   = "tools/call"
	maxBatchCeiling   = 10000
	maxToolsFileBytes = 8 << 20
)

// SetDefaults fills in defaults.
func (c *JSONRPCConfig) SetDefaults() {
	if c.Batch == "" {
		c.Batch = BatchEach
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.UnknownTool == "" {
		c.UnknownTool = UnknownToolDeny
	}
	for i := range c.Routes {
		if c.Routes[i].Protocol == "" {
			c.Routes[i].Protocol = ProtocolMCP
		}
	}
}

// Validate reports every problem in c under path.
func (c *JSONRPCConfig) Validate(path string) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(c.Routes) == 0 {
		add("%s.routes: at least one route is required", path)
	}
	for i, rt := range c.Routes {
		p := fmt.Sprintf("%s.routes[%d]", path, i)
		if (rt.Path == "") == (rt.PathPrefix == "") {
			add("%s: set exactly one of path and pathPrefix", p)
		}
		errs = append(errs, Match{Hosts: rt.Hosts, Path: rt.Path, PathPrefix: rt.PathPrefix}.validate(p)...)
		switch rt.Protocol {
		case ProtocolMCP, ProtocolA2A, ProtocolJSONRPC:
		default:
			add("%s.protocol: must be one of mcp, a2a, jsonrpc, not %q", p, rt.Protocol)
		}
	}
	if c.Batch != BatchEach && c.Batch != BatchDeny {
		add("%s.batch: must be %q or %q, not %q", path, BatchEach, BatchDeny, c.Batch)
	}
	if c.MaxBatch < 1 || c.MaxBatch > maxBatchCeiling {
		add("%s.maxBatch: must be between 1 and %d", path, maxBatchCeiling)
	}
	if c.UnknownTool != UnknownToolDeny && c.UnknownTool != UnknownToolAllow {
		add("%s.unknownTool: must be %q or %q, not %q", path, UnknownToolDeny, UnknownToolAllow, c.UnknownTool)
	}
	seen := map[string]bool{}
	for i, t := range c.Tools {
		p := fmt.Sprintf("%s.tools[%d]", path, i)
		if t.Name == "" {
			add("%s.name: required", p)
		} else if seen[t.Name] {
			add("%s.name: tool %q defined twice", p, t.Name)
		}
		seen[t.Name] = true
		if t.InputSchema == nil {
			add("%s.inputSchema: required", p)
		}
	}
	return errors.Join(errs...)
}

func (m *JSONRPCMatch) validate(p string, haveRoutes bool) []error {
	var errs []error
	if !haveRoutes {
		errs = append(errs, fmt.Errorf("%s: needs authz.jsonrpc.routes (no route is JSON-RPC)", p))
	}
	if m.Method != "" && m.MethodPrefix != "" {
		errs = append(errs, fmt.Errorf("%s: method and methodPrefix are exclusive", p))
	}
	if m.Tool != "" && m.Method != "" && m.Method != MethodToolsCall {
		errs = append(errs, fmt.Errorf("%s.tool: only for method %s, not %q", p, MethodToolsCall, m.Method))
	}
	if m.Tool != "" && m.MethodPrefix != "" {
		errs = append(errs, fmt.Errorf("%s.tool: implies method %s; drop methodPrefix", p, MethodToolsCall))
	}
	if m.Method == "" && m.MethodPrefix == "" && m.Tool == "" {
		errs = append(errs, fmt.Errorf("%s: set method, methodPrefix or tool", p))
	}
	return errs
}

// ParseTools reads an MCP tools/list result: {"tools":[...]} or the whole
// JSON-RPC response {"jsonrpc":"2.0","id":...,"result":{"tools":[...]}}.
// It is decoded strictly (duplicate keys are an error); each tool must
// have a unique name and an object inputSchema. Other tool fields
// (description, annotations, outputSchema) are dropped.
func ParseTools(data []byte) ([]ToolConfig, error) {
	v, err := body.Decode(data, body.Limits{MaxBytes: maxToolsFileBytes, MaxDepth: body.MaxDepthCeiling, MaxValues: 1 << 20})
	if err != nil {
		return nil, err
	}
	doc, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not a JSON object")
	}
	if res, ok := doc["result"]; ok {
		if doc, ok = res.(map[string]any); !ok {
			return nil, errors.New("result: not an object")
		}
	} else if e, ok := doc["error"]; ok {
		b, _ := json.Marshal(e)
		return nil, fmt.Errorf("the saved response is a JSON-RPC error: %s", b)
	}
	list, ok := doc["tools"].([]any)
	if !ok {
		return nil, errors.New("tools: missing or not an array")
	}
	var errs []error
	out := make([]ToolConfig, 0, len(list))
	seen := map[string]bool{}
	for i, e := range list {
		t, ok := e.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("tools[%d]: not an object", i))
			continue
		}
		name, _ := t["name"].(string)
		sch, ok := t["inputSchema"].(map[string]any)
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("tools[%d].name: missing or not a string", i))
		case seen[name]:
			errs = append(errs, fmt.Errorf("tools[%d].name: tool %q listed twice", i, name))
		case !ok:
			errs = append(errs, fmt.Errorf("tools[%d] (%s).inputSchema: missing or not an object", i, name))
		default:
			seen[name] = true
			out = append(out, ToolConfig{Name: name, InputSchema: sch})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortFunc(out, func(a, b ToolConfig) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// loadTools returns the inline tools and those of ToolsFile, read from dir
// (an absolute name from disk); a name in both is an error.
func (c *JSONRPCConfig) loadTools(dir fs.FS) ([]ToolConfig, []byte, error) {
	tools := slices.Clone(c.Tools)
	if c.ToolsFile == "" {
		return tools, nil, nil
	}
	var data []byte
	var err error
	switch {
	case filepath.IsAbs(c.ToolsFile):
		data, err = os.ReadFile(c.ToolsFile)
	case dir == nil:
		err = errors.New("no configuration folder to read it from")
	default:
		data, err = fs.ReadFile(dir, filepath.ToSlash(filepath.Clean(c.ToolsFile)))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("authz.jsonrpc.toolsFile %s: %w", c.ToolsFile, err)
	}
	fromFile, err := ParseTools(data)
	if err != nil {
		return nil, nil, fmt.Errorf("authz.jsonrpc.toolsFile %s: %w", c.ToolsFile, err)
	}
	for _, t := range fromFile {
		if slices.ContainsFunc(tools, func(x ToolConfig) bool { return x.Name == t.Name }) {
			return nil, nil, fmt.Errorf("authz.jsonrpc.toolsFile %s: tool %q is also defined in authz.jsonrpc.tools", c.ToolsFile, t.Name)
		}
		tools = append(tools, t)
	}
	return tools, data, nil
}

// CompileTools checks that every tool's inputSchema compiles as a JSON
// Schema, as a revision would compile it; origin (a file name) prefixes
// each tool in errors. `meshward mcp import` checks a tools/list with it
// before writing a tools file.
func CompileTools(tools []ToolConfig, origin string) error {
	srcs := make([]schema.Source, 0, len(tools))
	for _, t := range tools {
		srcs = append(srcs, schema.Source{Name: t.Name, Origin: origin + " tool " + t.Name, Doc: t.InputSchema})
	}
	_, err := schema.Compile(srcs, schema.Options{})
	return err
}
