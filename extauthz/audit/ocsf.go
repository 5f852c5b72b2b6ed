package audit

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Sink formats (SinkConfig.Format).
const (
	FormatJSON = "json" // meshward's record, chained and sealed in a file
	FormatOCSF = "ocsf" // an OCSF event per record (see docs/audit.md)
)

// OCSFVersion is the OCSF schema version the ocsf format follows.
const OCSFVersion = "1.3.0"

// OCSF class, category and enum values used by the mapping.
const (
	ocsfClassAPIActivity = 6003
	ocsfCategoryApp      = 6
	ocsfClassBase        = 0
	ocsfActivityOther    = 99
	ocsfSeverityInfo     = 1
	ocsfSeverityMedium   = 3
	ocsfSeverityHigh     = 4
	ocsfStatusSuccess    = 1
	ocsfStatusFailure    = 2
	ocsfActionAllowed    = 1
	ocsfActionDenied     = 2
	ocsfDispAllowed      = 1
	ocsfDispBlocked      = 2
)

// ocsfEvent is the subset of an OCSF event the mapping fills. Field names
// and nesting are OCSF's.
type ocsfEvent struct {
	ActivityID    int            `json:"activity_id"`
	ActivityName  string         `json:"activity_name"`
	CategoryUID   int            `json:"category_uid"`
	CategoryName  string         `json:"category_name"`
	ClassUID      int            `json:"class_uid"`
	ClassName     string         `json:"class_name"`
	TypeUID       int            `json:"type_uid"`
	TypeName      string         `json:"type_name"`
	Time          int64          `json:"time"` // milliseconds since the epoch
	SeverityID    int            `json:"severity_id"`
	Severity      string         `json:"severity"`
	StatusID      int            `json:"status_id,omitempty"`
	Status        string         `json:"status,omitempty"`
	StatusCode    string         `json:"status_code,omitempty"`
	StatusDetail  string         `json:"status_detail,omitempty"`
	Message       string         `json:"message,omitempty"`
	ActionID      int            `json:"action_id,omitempty"`
	Action        string         `json:"action,omitempty"`
	DispositionID int            `json:"disposition_id,omitempty"`
	Disposition   string         `json:"disposition,omitempty"`
	Metadata      ocsfMetadata   `json:"metadata"`
	Actor         *ocsfActor     `json:"actor,omitempty"`
	API           *ocsfAPI       `json:"api,omitempty"`
	HTTPRequest   *ocsfHTTP      `json:"http_request,omitempty"`
	SrcEndpoint   *ocsfEndpoint  `json:"src_endpoint,omitempty"`
	DstEndpoint   *ocsfEndpoint  `json:"dst_endpoint,omitempty"`
	Unmapped      map[string]any `json:"unmapped,omitempty"`
}

type ocsfMetadata struct {
	Version        string      `json:"version"`
	Product        ocsfProduct `json:"product"`
	Profiles       []string    `json:"profiles,omitempty"`
	UID            string      `json:"uid,omitempty"`
	CorrelationUID string      `json:"correlation_uid,omitempty"`
	EventCode      string      `json:"event_code"`
	LogName        string      `json:"log_name"`
	Sequence       uint64      `json:"sequence"`
}

type ocsfProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
}

type ocsfActor struct {
	User           *ocsfUser           `json:"user,omitempty"`
	Authorizations []ocsfAuthorization `json:"authorizations,omitempty"`
}

type ocsfUser struct {
	UID string `json:"uid"`
}

type ocsfAuthorization struct {
	Decision string      `json:"decision"`
	Policy   *ocsfPolicy `json:"policy,omitempty"`
}

type ocsfPolicy struct {
	Name string `json:"name,omitempty"`
	UID  string `json:"uid,omitempty"`
}

type ocsfAPI struct {
	Operation string        `json:"operation"`
	Request   *ocsfReq      `json:"request,omitempty"`
	Response  *ocsfResp     `json:"response,omitempty"`
	Service   *ocsfService  `json:"service,omitempty"`
	Version   string        `json:"version,omitempty"`
	Group     *ocsfAPIGroup `json:"group,omitempty"`
}

type ocsfReq struct {
	UID string `json:"uid"`
}

type ocsfResp struct {
	Code  int    `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

type ocsfService struct {
	Name string `json:"name"`
}

type ocsfAPIGroup struct {
	Name string `json:"name"`
}

type ocsfHTTP struct {
	Method string   `json:"http_method,omitempty"`
	URL    *ocsfURL `json:"url,omitempty"`
	UID    string   `json:"uid,omitempty"`
}

type ocsfURL struct {
	Hostname    string `json:"hostname,omitempty"`
	Path        string `json:"path,omitempty"`
	QueryString string `json:"query_string,omitempty"`
}

type ocsfEndpoint struct {
	UID      string `json:"uid,omitempty"`
	Hostname string `json:"hostname,omitempty"`
}

var ocsfAPIActivities = map[string]struct {
	id   int
	name string
}{
	http.MethodPost:   {1, "Create"},
	http.MethodGet:    {2, "Read"},
	http.MethodHead:   {2, "Read"},
	http.MethodPut:    {3, "Update"},
	http.MethodPatch:  {3, "Update"},
	http.MethodDelete: {4, "Delete"},
}

var ocsfSeverities = map[int]string{ocsfSeverityInfo: "Informational", ocsfSeverityMedium: "Medium", ocsfSeverityHigh: "High"}

// isDecisionKind reports whether kind is the record of a Check.
func isDecisionKind(kind string) bool {
	return kind == KindDecision || kind == KindAuthzDenial || kind == KindAuthnFailure
}

// toOCSF maps a (redacted) record to an OCSF event: a Check's record to
// API Activity (6003) with the security_control profile, a security
// event to a Base Event (0). seq is the sink's sequence number.
func toOCSF(r *Record, seq uint64) *ocsfEvent {
	e := &ocsfEvent{
		Time:    r.Time.UnixMilli(),
		Message: r.Message,
		Metadata: ocsfMetadata{
			Version:        OCSFVersion,
			Product:        ocsfProduct{Name: "meshward", VendorName: "meshward"},
			UID:            r.DecisionID,
			CorrelationUID: r.RequestID,
			EventCode:      r.Kind,
			LogName:        "audit",
			Sequence:       seq,
		},
	}
	un := map[string]any{"process": r.Process}
	if !isDecisionKind(r.Kind) {
		e.ClassUID, e.ClassName, e.CategoryUID, e.CategoryName = ocsfClassBase, "Base Event", 0, "Uncategorized"
		e.ActivityID, e.ActivityName = ocsfActivityOther, "Other"
		e.TypeUID, e.TypeName = ocsfClassBase*100+ocsfActivityOther, "Base Event: Other"
		e.SeverityID = ocsfSeverityHigh
		if r.Principal != "" {
			e.Actor = &ocsfActor{User: &ocsfUser{UID: r.Principal}}
		}
		putNonEmpty(un, "node", r.Node)
		putNonEmpty(un, "type", r.Type)
		if len(r.Detail) > 0 {
			un["detail"] = r.Detail
		}
		e.Severity = ocsfSeverities[e.SeverityID]
		e.Unmapped = un
		return e
	}

	e.ClassUID, e.ClassName, e.CategoryUID, e.CategoryName = ocsfClassAPIActivity, "API Activity", ocsfCategoryApp, "Application Activity"
	e.Metadata.Profiles = []string{"security_control"}
	act, ok := ocsfAPIActivities[r.Method]
	if !ok || r.JSONRPCMethod != "" { // a JSON-RPC call's CRUD kind is not known
		act.id, act.name = ocsfActivityOther, "Other"
	}
	e.ActivityID, e.ActivityName = act.id, act.name
	e.TypeUID, e.TypeName = ocsfClassAPIActivity*100+act.id, "API Activity: "+act.name

	op := r.Method
	switch {
	case r.MCPTool != "":
		op = r.JSONRPCMethod + " " + r.MCPTool
	case r.JSONRPCMethod != "":
		op = r.JSONRPCMethod
	}
	e.API = &ocsfAPI{Operation: op, Response: &ocsfResp{Code: r.Status}}
	if r.DecisionID != "" {
		e.API.Request = &ocsfReq{UID: r.DecisionID}
	}
	if r.Host != "" {
		e.API.Service = &ocsfService{Name: r.Host}
		e.DstEndpoint = &ocsfEndpoint{Hostname: r.Host}
	}
	if r.MCPTool != "" {
		e.API.Group = &ocsfAPIGroup{Name: "mcp"}
	}
	path, query, _ := strings.Cut(r.Path, "?")
	if r.Query != "" {
		query = r.Query
	}
	e.HTTPRequest = &ocsfHTTP{Method: r.Method, UID: r.RequestID}
	if r.Host != "" || path != "" || query != "" {
		e.HTTPRequest.URL = &ocsfURL{Hostname: r.Host, Path: path, QueryString: query}
	}
	e.SrcEndpoint = &ocsfEndpoint{UID: r.Principal} // required by the class; the workload's SPIFFE ID
	auth := ocsfAuthorization{Decision: r.Decision}
	if r.Rule != "" || r.PolicyRevision != "" {
		auth.Policy = &ocsfPolicy{Name: r.Rule, UID: r.PolicyRevision}
	}
	e.Actor = &ocsfActor{Authorizations: []ocsfAuthorization{auth}}
	if r.Principal != "" {
		e.Actor.User = &ocsfUser{UID: r.Principal}
	}
	if r.Status != 0 {
		e.StatusCode = strconv.Itoa(r.Status)
	}
	e.StatusDetail = r.Reason
	if r.Decision == "allow" {
		e.StatusID, e.Status = ocsfStatusSuccess, "Success"
		e.ActionID, e.Action, e.DispositionID, e.Disposition = ocsfActionAllowed, "Allowed", ocsfDispAllowed, "Allowed"
		e.SeverityID = ocsfSeverityInfo
	} else {
		e.StatusID, e.Status = ocsfStatusFailure, "Failure"
		e.ActionID, e.Action, e.DispositionID, e.Disposition = ocsfActionDenied, "Denied", ocsfDispBlocked, "Blocked"
		e.SeverityID = ocsfSeverityMedium
		e.API.Response.Error = r.Reason
	}
	e.Severity = ocsfSeverities[e.SeverityID]

	putNonEmpty(un, "subject", r.Subject)
	putNonEmpty(un, "jsonrpc_id", r.JSONRPCID)
	putNonEmpty(un, "quota", r.Quota)
	if r.JSONRPCBatch != 0 {
		un["jsonrpc_batch"] = r.JSONRPCBatch
	}
	if len(r.Roles) > 0 {
		un["roles"] = r.Roles
	}
	if len(r.Violations) > 0 {
		un["violations"] = r.Violations
	}
	if r.DryRun {
		un["dry_run"] = true
	}
	if r.Latency != 0 {
		un["latency_ns"] = int64(r.Latency)
	}
	if len(r.Headers) > 0 {
		un["headers"] = r.Headers
	}
	if len(r.Claims) > 0 {
		un["claims"] = r.Claims
	}
	if r.Body != nil {
		un["body"] = r.Body
	}
	e.Unmapped = un
	return e
}

func putNonEmpty(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

// appendOCSF appends the OCSF line of r (with its newline) to dst.
func appendOCSF(dst []byte, r *Record, seq uint64) ([]byte, error) {
	b, err := json.Marshal(toOCSF(r, seq))
	if err != nil {
		return dst, err
	}
	return append(append(dst, b...), '\n'), nil
}
