package envoy

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// MinEnvoyVersion is the oldest Envoy the generated resources are meant
// for: the release whose API (go-control-plane's envoy module v1.40.0)
// every resource is validated against. An older Envoy ignores fields it
// does not know instead of rejecting them, so it can accept a resource
// and behave differently: without the generic credential's
// header_value_prefix it injects the bare secret, not "Bearer <secret>".
var MinEnvoyVersion = [3]uint32{1, 40, 0}

// ErrEnvoyTooOld is returned by CheckEnvoyVersion for an Envoy older than
// MinEnvoyVersion, or one that did not say its version.
var ErrEnvoyTooOld = errors.New("envoy older than meshward supports")

// CheckEnvoyVersion reports whether the Envoy that sent node (the node of
// its first xDS request, which carries user_agent_build_version) is at
// least MinEnvoyVersion. Only Envoy itself is checked: another client
// (user_agent_name not "envoy") is accepted.
func CheckEnvoyVersion(node *corev3.Node) error {
	if node.GetUserAgentName() != "" && node.GetUserAgentName() != "envoy" {
		return nil
	}
	v := node.GetUserAgentBuildVersion().GetVersion()
	if v == nil {
		return fmt.Errorf("node %q: %w: no user_agent_build_version (need %s or later)", node.GetId(), ErrEnvoyTooOld, fmtVersion(MinEnvoyVersion))
	}
	got := [3]uint32{v.GetMajorNumber(), v.GetMinorNumber(), v.GetPatch()}
	for i := range got {
		if got[i] != MinEnvoyVersion[i] {
			if got[i] < MinEnvoyVersion[i] {
				return fmt.Errorf("node %q: %w: Envoy %s, need %s or later (older ones ignore fields they do not know, such as the credential's header_value_prefix)",
					node.GetId(), ErrEnvoyTooOld, fmtVersion(got), fmtVersion(MinEnvoyVersion))
			}
			return nil
		}
	}
	return nil
}

func fmtVersion(v [3]uint32) string { return fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) }
