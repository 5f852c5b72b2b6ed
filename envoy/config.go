package envoy

import (
	"errors"
	"fmt"
	"net"
	"regexp"
)

// Agent is one agent of the mesh: its Envoy's node id is Name.
type Agent struct {
	Name     string `yaml:"name"`
	SPIFFEID string `yaml:"spiffeID"`
	// InboundPort is where the agent's Envoy accepts mTLS from peers.
	InboundPort uint32 `yaml:"inboundPort"`
	// App is the local address of the agent itself (host:port).
	App string `yaml:"app"`
	// OutboundPort is the loopback port the app sends plain HTTP to.
	OutboundPort uint32 `yaml:"outboundPort"`
	// Peers are the agents this agent may call.
	Peers []Peer `yaml:"peers"`
}

// Peer is an agent another agent may call.
type Peer struct {
	// Name of the peer agent.
	Name string `yaml:"name"`
	// Addresses of the peer's Envoy (host:port).
	Addresses []string `yaml:"addresses"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateAgents reports every problem in the agents list, named under path.
func ValidateAgents(path string, agents []Agent) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	names := map[string]bool{}
	for i, a := range agents {
		p := fmt.Sprintf("%s[%d]", path, i)
		if !nameRE.MatchString(a.Name) {
			add("%s.name: %q must be a DNS label (lowercase letters, digits, -)", p, a.Name)
		} else if names[a.Name] {
			add("%s.name: agent %q defined twice", p, a.Name)
		}
		names[a.Name] = true
		if a.InboundPort == 0 || a.InboundPort > 65535 {
			add("%s.inboundPort: must be 1-65535", p)
		}
		if a.OutboundPort > 65535 {
			add("%s.outboundPort: must be 1-65535", p)
		}
		if _, _, err := net.SplitHostPort(a.App); err != nil {
			add("%s.app: %v", p, err)
		}
	}
	for i, a := range agents {
		for j, peer := range a.Peers {
			p := fmt.Sprintf("%s[%d].peers[%d]", path, i, j)
			if !names[peer.Name] {
				add("%s.name: unknown agent %q", p, peer.Name)
			}
			if len(peer.Addresses) == 0 {
				add("%s.addresses: at least one address is required", p)
			}
			for k, addr := range peer.Addresses {
				if _, _, err := net.SplitHostPort(addr); err != nil {
					add("%s.addresses[%d]: %v", p, k, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}
