package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func metav1AddToGroupVersion(s *runtime.Scheme) { metav1.AddToGroupVersion(s, GroupVersion) }

// Condition types and reasons meshward writes.
const (
	// ConditionAccepted is True when the object's generation is served,
	// False with the field path and message of each problem when not.
	ConditionAccepted = "Accepted"
	ReasonAccepted    = "Accepted"
	ReasonInvalid     = "Invalid"
)

// Status is what meshward reports of an object.
type Status struct {
	// Conditions: Accepted.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// SPIFFEID is the identity meshward serves the agent (MeshAgent only).
	// +optional
	SPIFFEID string `json:"spiffeID,omitempty"`
}

// MeshAgent is one agent of the mesh: what an `agents` entry of the
// configuration file says, its name the object's name and its SPIFFE ID
// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshward
// +kubebuilder:printcolumn:name="SPIFFE ID",type=string,JSONPath=`.status.spiffeID`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Quarantined",type=date,JSONPath=`.spec.quarantine.since`,priority=1
// +kubebuilder:validation:XValidation:rule="self.metadata.name.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')",message="metadata.name must be a DNS label (lowercase letters, digits, -)"
type MeshAgent struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MeshAgentSpec `json:"spec"`
	Status Status        `json:"status,omitempty"`
}

// MeshAgentSpec is an agents entry without name, SPIFFE ID and host.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.outboundSocket) && has(self.outboundPort))",message="outboundSocket: exclusive with outboundPort"
// +kubebuilder:validation:XValidation:rule="!has(self.peers) || size(self.peers) == 0 || has(self.outboundPort) || has(self.outboundSocket)",message="outboundPort: required when the agent has peers (or outboundSocket)"
// +kubebuilder:validation:XValidation:rule="!has(self.outboundSocket) || (has(self.peers) && size(self.peers) > 0)",message="outboundSocket: the agent has no peers, so no outbound listener"
// +kubebuilder:validation:XValidation:rule="!has(self.outboundSocketMode) || has(self.outboundSocket)",message="outboundSocketMode: must be set only with outboundSocket"
type MeshAgentSpec struct {
	// Selector picks the agent's pods (in the object's namespace). Their
	// ServiceAccount gives the SPIFFE ID; they must all share one.
	Selector metav1.LabelSelector `json:"selector"`
	// ServiceAccountName, when set, is the agent's ServiceAccount: the
	// selected pods must use it. Unset: the selected pods' ServiceAccount.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// InboundPort is where the agent's Envoy accepts mTLS from peers.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	InboundPort int32 `json:"inboundPort"`
	// App is the local address of the agent itself (host:port).
	// +kubebuilder:validation:MinLength=1
	App string `json:"app"`
	// OutboundPort is the loopback port the app sends plain HTTP to.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	OutboundPort int32 `json:"outboundPort,omitempty"`
	// OutboundSocket, instead of OutboundPort, is the absolute path of a
	// unix socket the app sends plain HTTP to.
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	OutboundSocket string `json:"outboundSocket,omitempty"`
	// OutboundSocketMode of OutboundSocket: owner and group bits only (within 0770).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=504
	// +optional
	OutboundSocketMode int32 `json:"outboundSocketMode,omitempty"`
	// AdminPort is the loopback port of the agent's Envoy admin server.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	AdminPort int32 `json:"adminPort,omitempty"`
	// SharedSPIFFEID allows this agent's SPIFFE ID to be another agent's too.
	// +optional
	SharedSPIFFEID bool `json:"sharedSPIFFEID,omitempty"`
	// Peers are the agents (MeshAgent names) this agent may call.
	// +listType=map
	// +listMapKey=name
	// +optional
	Peers []Peer `json:"peers,omitempty"`
	// JWTProviders make the inbound listener verify a JWT a request carries.
	// +listType=map
	// +listMapKey=name
	// +optional
	JWTProviders []JWTProvider `json:"jwtProviders,omitempty"`
	// Quarantine, when set, quarantines the agent's SPIFFE ID (as
	// `meshward quarantine` does): every Check from or to it is denied
	// 403 quarantined, its Envoy gets no configuration and no new SVID,
	// and its peers' clusters to it are withdrawn. Every replica watching
	// the cluster applies it; removing it releases the agent.
	// +optional
	Quarantine *Quarantine `json:"quarantine,omitempty"`
}

// Quarantine says why and by whom an agent is quarantined. Every field is
// informational: an empty quarantine ({}) quarantines all the same.
type Quarantine struct {
	// Reason is recorded in the audit event.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
	// By names who quarantined the agent (a person, "admin-api",
	// "detector"); unset, the audit event names the field manager that
	// set the field.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	By string `json:"by,omitempty"`
	// Since is when the agent was quarantined; unset, when meshward saw it.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// Peer is an agent another agent may call.
type Peer struct {
	// Name of the peer MeshAgent.
	Name string `json:"name"`
	// Addresses of the peer's Envoy (host:port). Unset, the peer's
	// cluster is an EDS cluster whose endpoints are the IPs of the pods
	// the peer MeshAgent selects, on its inboundPort, with their
	// readiness (pushed as they change, to this agent's Envoys only).
	// +kubebuilder:validation:MinItems=1
	// +optional
	Addresses []string `json:"addresses,omitempty"`
	// Credential, when set, is injected into every request to the peer.
	// +optional
	Credential *Credential `json:"credential,omitempty"`
}

// Credential is a generic secret an agent's Envoy adds to its requests.
type Credential struct {
	// Header that carries the credential. Default Authorization.
	// +optional
	Header string `json:"header,omitempty"`
	// Secret is the name of the generic secret in the secrets source.
	// +kubebuilder:validation:MinLength=1
	Secret string `json:"secret"`
	// Format of the header value: a prefix and one %s. Default "%s".
	// +optional
	Format string `json:"format,omitempty"`
}

// JWTProvider is an issuer whose tokens the inbound listener verifies.
//
// +kubebuilder:validation:XValidation:rule="has(self.remoteJWKS) != has(self.localJWKS)",message="set exactly one of remoteJWKS and localJWKS"
type JWTProvider struct {
	// Name of the provider, unique within the agent.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`
	Name string `json:"name"`
	// Issuer the token's iss claim must equal.
	// +kubebuilder:validation:MinLength=1
	Issuer string `json:"issuer"`
	// Audiences, one of which the token's aud claim must hold.
	// +optional
	Audiences []string `json:"audiences,omitempty"`
	// RemoteJWKS is the https URI of the provider's key set.
	// +optional
	RemoteJWKS string `json:"remoteJWKS,omitempty"`
	// LocalJWKS is the key set itself (a JSON document with "keys").
	// +optional
	LocalJWKS string `json:"localJWKS,omitempty"`
}

// MeshAgentList is a list of MeshAgents.
//
// +kubebuilder:object:root=true
type MeshAgentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshAgent `json:"items"`
}

// AuthorizationRule is a part of the authz section: identities, levels and
// rules, owned by one team. All AuthorizationRules of the cluster make one
// policy; rule and level names are unique across them.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshward
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
type AuthorizationRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationRuleSpec `json:"spec"`
	Status Status                `json:"status,omitempty"`
}

// AuthorizationRuleSpec is authz.identities, authz.levels and authz.rules.
type AuthorizationRuleSpec struct {
	// Identities map SPIFFE IDs (exact, or with * segments) to roles and attributes.
	// +optional
	Identities []Identity `json:"identities,omitempty"`
	// Levels are ordered attribute values (lowest first) for atLeast.
	// +optional
	Levels map[string][]string `json:"levels,omitempty"`
	// Rules: explicit deny wins; nothing matched denies.
	// +listType=map
	// +listMapKey=name
	// +optional
	Rules []Rule `json:"rules,omitempty"`
}

// Identity is an authz.identities entry.
type Identity struct {
	// SPIFFEID, exact or with * segment wildcards.
	// +kubebuilder:validation:Pattern=`^spiffe://`
	SPIFFEID string `json:"spiffeID"`
	// +optional
	Roles []string `json:"roles,omitempty"`
	// +optional
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Rule is an authz.rules entry.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.schema) && has(self.schemaBy))",message="schema and schemaBy are exclusive"
// +kubebuilder:validation:XValidation:rule="!has(self.effect) || self.effect != 'deny' || (!has(self.schema) && !has(self.schemaBy))",message="a deny rule cannot name a schema"
type Rule struct {
	// Name, unique across every AuthorizationRule.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Effect: allow (default) or deny.
	// +kubebuilder:validation:Enum=allow;deny
	// +optional
	Effect string `json:"effect,omitempty"`
	// +optional
	Match Match `json:"match,omitempty"`
	// +optional
	Require Require `json:"require,omitempty"`
	// Schema names a MessageSchema the body must satisfy.
	// +optional
	Schema string `json:"schema,omitempty"`
	// SchemaBy picks the schema by a field of the body.
	// +optional
	SchemaBy *SchemaSelector `json:"schemaBy,omitempty"`
	// DryRun logs what the rule would decide without enforcing it.
	// +optional
	DryRun bool `json:"dryRun,omitempty"`
}

// Match is a rule's match.
//
// +kubebuilder:validation:XValidation:rule="(has(self.path) ? 1 : 0) + (has(self.pathPrefix) ? 1 : 0) + (has(self.pathTemplate) ? 1 : 0) <= 1",message="path, pathPrefix and pathTemplate are exclusive"
type Match struct {
	// +optional
	Methods []string `json:"methods,omitempty"`
	// Hosts: lowercase, without port.
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	Path string `json:"path,omitempty"`
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	PathPrefix string `json:"pathPrefix,omitempty"`
	// +kubebuilder:validation:Pattern=`^/`
	// +optional
	PathTemplate string `json:"pathTemplate,omitempty"`
}

// Require is what a matched request needs.
type Require struct {
	// +optional
	AnyRole []string `json:"anyRole,omitempty"`
	// +optional
	Attributes map[string]ValueRequirement `json:"attributes,omitempty"`
	// +optional
	Claims map[string]ValueRequirement `json:"claims,omitempty"`
}

// ValueRequirement: exactly one of its fields.
//
// +kubebuilder:validation:XValidation:rule="(has(self.equals) ? 1 : 0) + (has(self.oneOf) ? 1 : 0) + (has(self.atLeast) ? 1 : 0) + (has(self.contains) ? 1 : 0) == 1",message="set exactly one of equals, oneOf, atLeast, contains"
type ValueRequirement struct {
	// +optional
	Equals string `json:"equals,omitempty"`
	// +optional
	OneOf []string `json:"oneOf,omitempty"`
	// +optional
	AtLeast string `json:"atLeast,omitempty"`
	// +optional
	Contains string `json:"contains,omitempty"`
}

// SchemaSelector picks a body's schema by one of its top-level fields.
type SchemaSelector struct {
	// +kubebuilder:validation:MinLength=1
	Field string `json:"field"`
	// Schemas maps the field's values to MessageSchema names.
	// +kubebuilder:validation:MinProperties=1
	Schemas map[string]string `json:"schemas"`
}

// AuthorizationRuleList is a list of AuthorizationRules.
//
// +kubebuilder:object:root=true
type AuthorizationRuleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AuthorizationRule `json:"items"`
}

// MessageSchema is a JSON Schema (draft 2020-12, or draft-07 by $schema)
// that rules name by the object's name, unique across namespaces.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=meshward
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
type MessageSchema struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MessageSchemaSpec `json:"spec"`
	Status Status            `json:"status,omitempty"`
}

// MessageSchemaSpec holds the schema.
type MessageSchemaSpec struct {
	// Schema is the JSON Schema document.
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	Schema runtime.RawExtension `json:"schema"`
}

// MessageSchemaList is a list of MessageSchemas.
//
// +kubebuilder:object:root=true
type MessageSchemaList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MessageSchema `json:"items"`
}
