// Package v1alpha1 is meshward's Kubernetes API, group meshward.dev:
// MeshAgent (an agents entry of the configuration file, its SPIFFE ID
// taken from its pods' ServiceAccount), AuthorizationRule (identities,
// levels and rules) and MessageSchema (a JSON Schema rules refer to by
// name). The CRDs under examples/kubernetes/crds are generated from these
// types by controller-gen (make crds).
//
// The OpenAPI schemas and CEL rules catch at admission what they can; the
// same validation code as the configuration file's decides what serves
// (cmd/meshward/internal/kube), and reports the rest in status.conditions.
//
// +kubebuilder:object:generate=true
// +groupName=meshward.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is meshward.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "meshward.dev", Version: "v1alpha1"}

// Resource names, as the API server serves them.
const (
	ResourceMeshAgents         = "meshagents"
	ResourceAuthorizationRules = "authorizationrules"
	ResourceMessageSchemas     = "messageschemas"
)

// SchemeBuilder registers the types with a scheme.
var SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

// AddToScheme adds the types to a scheme.
var AddToScheme = SchemeBuilder.AddToScheme

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MeshAgent{}, &MeshAgentList{},
		&AuthorizationRule{}, &AuthorizationRuleList{},
		&MessageSchema{}, &MessageSchemaList{},
	)
	metav1AddToGroupVersion(s)
	return nil
}
