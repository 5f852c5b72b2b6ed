package envoy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	posix "path"
	"regexp"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Agent is one agent of the mesh: its Envoy's node id is Name.
type Agent struct {
	Name     string `yaml:"name"`
	SPIFFEID string `yaml:"spiffeID"`
	// InboundPort is where the agent's Envoy accepts mTLS from peers.
	InboundPort uint32 `yaml:"inboundPort"`
	// App is the local address of the agent itself (host:port).
	App string `yaml:"app"`
	// OutboundPort is the loopback port the app sends plain HTTP to. Any
	// process that can reach the agent's loopback can use it, and so act
	// with the agent's identity and injected credentials: run one agent
	// per network namespace (a pod), or use OutboundSocket.
	OutboundPort uint32 `yaml:"outboundPort"`
	// OutboundSocket, instead of OutboundPort, is the absolute path of a
	// unix socket the app sends plain HTTP to; its file mode
	// (OutboundSocketMode) limits which users can.
	OutboundSocket string `yaml:"outboundSocket"`
	// OutboundSocketMode of OutboundSocket: owner and group bits only.
	// Default DefaultOutboundSocketMode (the Envoy's user only).
	OutboundSocketMode uint32 `yaml:"outboundSocketMode"`
	// Host names the machine (or network namespace, e.g. a pod) the agent
	// and its Envoy run on. Agents with the same Host, or none, share one
	// set of ports: their inbound, outbound, admin and (loopback) app
	// ports must all differ.
	Host string `yaml:"host"`
	// AdminPort is the loopback port of the agent's Envoy admin server
	// (meshward bootstrap's default for --admin-port). Zero: the
	// bootstrap's flag, else DefaultAdminPort when the agent is alone on
	// its host.
	AdminPort uint32 `yaml:"adminPort"`
	// SharedSPIFFEID allows this agent's SPIFFEID to be another agent's
	// too (every agent of the group must set it). Each of them can then
	// fetch the others' configuration and credentials over xDS, since xDS
	// binds a node to its certificate's SPIFFE ID.
	SharedSPIFFEID bool `yaml:"sharedSPIFFEID"`
	// Peers are the agents this agent may call.
	Peers []Peer `yaml:"peers"`
	// JWTProviders, when set, make the inbound listener verify a JWT
	// carried by a request (a present but invalid token is rejected with
	// 401; a missing one is let through to the authorizer, whose rules
	// decide whether claims are required).
	JWTProviders []JWTProvider `yaml:"jwtProviders"`
}

// Peer is an agent another agent may call.
type Peer struct {
	// Name of the peer agent.
	Name string `yaml:"name"`
	// Addresses of the peer's Envoy (host:port).
	Addresses []string `yaml:"addresses"`
	// Discovered, instead of Addresses, makes the peer's cluster an EDS
	// cluster: its endpoints (the peer's pods, see Endpoint) come over
	// the node's ADS stream as a ClusterLoadAssignment. The Kubernetes
	// source sets it for a peer without addresses; the configuration
	// file cannot.
	Discovered bool `yaml:"-"`
	// Credential, when set, is injected by this agent's Envoy into every
	// request to the peer, so the agent itself never holds it.
	Credential *Credential `yaml:"credential"`
}

// Credential is a generic secret an agent's Envoy adds to its requests to
// a peer.
type Credential struct {
	// Header that carries the credential. Default Authorization.
	Header string `yaml:"header"`
	// Secret is the name of the generic secret in the secrets source; it
	// is also the SDS resource name Envoy asks for.
	Secret string `yaml:"secret"`
	// Format of the header value: any prefix followed by one %s, which is
	// replaced by the secret (e.g. "Bearer %s"). Default "%s".
	Format string `yaml:"format"`
}

// JWTProvider is an issuer whose tokens an agent's inbound listener
// verifies. Exactly one of RemoteJWKS and LocalJWKS is set.
type JWTProvider struct {
	// Name of the provider, unique within the agent.
	Name string `yaml:"name"`
	// Issuer the token's iss claim must equal.
	Issuer string `yaml:"issuer"`
	// Audiences, one of which the token's aud claim must hold; empty
	// accepts any audience.
	Audiences []string `yaml:"audiences"`
	// RemoteJWKS is the https URI of the provider's key set.
	RemoteJWKS string `yaml:"remoteJWKS"`
	// LocalJWKS is the key set itself (a JSON document with "keys").
	LocalJWKS string `yaml:"localJWKS"`
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	secretRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$`)
	headerRE = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
)

// ReservedPath is the SPIFFE ID path under which meshward names its own
// services (spiffe://<td>/meshward/xds, spiffe://<td>/meshward/authz):
// no agent may take an ID there, or it would be served that service's
// key over SDS and could pose as it to every Envoy.
const ReservedPath = "/meshward"

// IsReservedSPIFFEID reports whether id's path is ReservedPath or under
// it (in any trust domain). An id that does not parse is not reserved.
func IsReservedSPIFFEID(id string) bool {
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return false
	}
	p := sid.Path()
	return p == ReservedPath || strings.HasPrefix(p, ReservedPath+"/")
}

// reservedSecrets are SDS names the translator itself uses.
var reservedSecrets = map[string]bool{SecretDefault: true, SecretRootCA: true}

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
		if _, err := spiffeid.FromString(a.SPIFFEID); err != nil {
			add("%s.spiffeID: %q: %v", p, a.SPIFFEID, err)
		} else if IsReservedSPIFFEID(a.SPIFFEID) {
			add("%s.spiffeID: %q is under %s, reserved for meshward's own services", p, a.SPIFFEID, ReservedPath)
		}
		if a.InboundPort == 0 || a.InboundPort > 65535 {
			add("%s.inboundPort: must be 1-65535", p)
		}
		if a.OutboundPort > 65535 {
			add("%s.outboundPort: must be 1-65535", p)
		}
		switch {
		case a.OutboundSocket != "" && a.OutboundPort != 0:
			add("%s.outboundSocket: exclusive with outboundPort", p)
		case len(a.Peers) > 0 && a.OutboundPort == 0 && a.OutboundSocket == "":
			add("%s.outboundPort: required when the agent has peers (or outboundSocket)", p)
		}
		if a.OutboundSocket != "" {
			if !posix.IsAbs(a.OutboundSocket) || posix.Clean(a.OutboundSocket) != a.OutboundSocket || strings.ContainsAny(a.OutboundSocket, "\x00\r\n") {
				add("%s.outboundSocket: %q must be a clean absolute path", p, a.OutboundSocket)
			}
			if len(a.Peers) == 0 {
				add("%s.outboundSocket: the agent has no peers, so no outbound listener", p)
			}
		}
		if m := a.OutboundSocketMode; m != 0 && (a.OutboundSocket == "" || m&^0o770 != 0) {
			add("%s.outboundSocketMode: %#o must be set only with outboundSocket and give nothing to others (within 0770)", p, m)
		}
		if a.AdminPort > 65535 {
			add("%s.adminPort: must be 1-65535", p)
		}
		if err := checkHostPort(a.App); err != nil {
			add("%s.app: %v", p, err)
		}
		errs = append(errs, validateJWTProviders(p+".jwtProviders", a.JWTProviders))
	}
	errs = append(errs, checkSharedIDs(path, agents), checkPorts(path, agents))
	jwt := map[string]bool{} // agents whose inbound listener verifies JWTs
	for _, a := range agents {
		jwt[a.Name] = len(a.JWTProviders) > 0
	}
	for i, a := range agents {
		peers := map[string]bool{}
		for j, peer := range a.Peers {
			p := fmt.Sprintf("%s[%d].peers[%d]", path, i, j)
			switch {
			case !names[peer.Name]:
				add("%s.name: unknown agent %q", p, peer.Name)
			case peer.Name == a.Name:
				add("%s.name: an agent cannot be its own peer", p)
			case peers[peer.Name]:
				add("%s.name: peer %q listed twice", p, peer.Name)
			}
			peers[peer.Name] = true
			switch {
			case peer.Discovered && len(peer.Addresses) > 0:
				add("%s.addresses: exclusive with endpoints discovered over EDS", p)
			case !peer.Discovered && len(peer.Addresses) == 0:
				add("%s.addresses: at least one address is required", p)
			}
			for k, addr := range peer.Addresses {
				if err := CheckDialAddress(addr); err != nil {
					add("%s.addresses[%d]: %v", p, k, err)
				}
			}
			if peer.Credential != nil {
				errs = append(errs, peer.Credential.validate(p+".credential"))
				// The peer's jwt_authn reads tokens from Authorization and
				// would reject the credential as a malformed JWT.
				if jwt[peer.Name] && strings.EqualFold(peer.Credential.header(), "Authorization") {
					add("%s.credential.header: peer %q verifies JWTs in Authorization; inject the credential in another header", p, peer.Name)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// checkSharedIDs reports a SPIFFE ID held by two agents, unless every
// agent holding it sets sharedSPIFFEID.
func checkSharedIDs(path string, agents []Agent) error {
	var errs []error
	first := map[string]int{}
	for i, a := range agents {
		j, dup := first[a.SPIFFEID]
		if !dup {
			first[a.SPIFFEID] = i
			continue
		}
		if !a.SharedSPIFFEID || !agents[j].SharedSPIFFEID {
			errs = append(errs, fmt.Errorf("%s[%d].spiffeID: %q is also %s[%d]'s; set sharedSPIFFEID on both to allow it (each could then fetch the other's configuration)", path, i, a.SPIFFEID, path, j))
		}
	}
	return errors.Join(errs...)
}

// checkPorts reports a port two listeners would take on one host: the
// Envoys' inbound, outbound and admin ports and the apps' ports, of every
// agent with the same Host. Envoy binds with reuse_port, so a collision
// between two Envoys is not refused by the kernel: it silently splits the
// connections between them.
func checkPorts(path string, agents []Agent) error {
	var errs []error
	type key struct {
		host string
		port uint32
	}
	owner := map[key]string{}
	sockets := map[string]string{} // host NUL path -> field
	claim := func(host string, port uint32, field string) {
		if port == 0 || port > 65535 {
			return
		}
		k := key{host, port}
		if prev, ok := owner[k]; ok {
			errs = append(errs, fmt.Errorf("%s: port %d is already %s on the same host (%s)", field, port, prev, hostLabel(host)))
			return
		}
		owner[k] = field
	}
	for i, a := range agents {
		p := fmt.Sprintf("%s[%d]", path, i)
		claim(a.Host, a.InboundPort, p+".inboundPort")
		claim(a.Host, a.OutboundPort, p+".outboundPort")
		claim(a.Host, a.AdminPort, p+".adminPort")
		if a.OutboundSocket != "" {
			k := a.Host + "\x00" + a.OutboundSocket
			if prev, ok := sockets[k]; ok {
				errs = append(errs, fmt.Errorf("%s.outboundSocket: %s is already %s on the same host (%s)", p, a.OutboundSocket, prev, hostLabel(a.Host)))
			}
			sockets[k] = p + ".outboundSocket"
		}
		if host, port, err := splitHostPort(a.App); err == nil && onHost(host, a.Host) {
			claim(a.Host, port, p+".app")
		}
	}
	return errors.Join(errs...)
}

func hostLabel(host string) string {
	if host == "" {
		return "agents without host"
	}
	return "host " + strconv.Quote(host)
}

// onHost reports whether an app address host is on the agent's own host:
// loopback, or the host's own name.
func onHost(addrHost, agentHost string) bool {
	if addrHost == "localhost" || (agentHost != "" && addrHost == agentHost) {
		return true
	}
	ip, err := netip.ParseAddr(addrHost)
	return err == nil && (ip.IsLoopback() || ip.IsUnspecified())
}

// CheckAdminPort reports whether port can be the admin port of node's
// Envoy: it must not be a port another listener takes on node's host
// (see Agent.Host), nor another agent's adminPort there.
func CheckAdminPort(agents []Agent, node string, port uint32) error {
	var self *Agent
	for i := range agents {
		if agents[i].Name == node {
			self = &agents[i]
		}
	}
	if self == nil {
		return fmt.Errorf("admin port: %w %q", ErrUnknownAgent, node)
	}
	for i, a := range agents {
		if a.Host != self.Host {
			continue
		}
		ports := map[string]uint32{"inboundPort": a.InboundPort, "outboundPort": a.OutboundPort}
		if a.Name != node {
			ports["adminPort"] = a.AdminPort
		}
		if host, p, err := splitHostPort(a.App); err == nil && onHost(host, a.Host) {
			ports["app"] = p
		}
		for _, f := range []string{"inboundPort", "outboundPort", "adminPort", "app"} {
			if ports[f] == port {
				return fmt.Errorf("admin port %d is already agents[%d].%s (%s) on the same host (%s)", port, i, f, a.Name, hostLabel(self.Host))
			}
		}
	}
	return nil
}

// HostMates returns the names of the other agents on node's host.
func HostMates(agents []Agent, node string) []string {
	host, found := "", false
	for _, a := range agents {
		if a.Name == node {
			host, found = a.Host, true
		}
	}
	var out []string
	for _, a := range agents {
		if found && a.Name != node && a.Host == host {
			out = append(out, a.Name)
		}
	}
	return out
}

func (c *Credential) validate(path string) error {
	var errs []error
	switch {
	case c.Secret == "":
		errs = append(errs, fmt.Errorf("%s.secret: required", path))
	case !secretRE.MatchString(c.Secret):
		errs = append(errs, fmt.Errorf("%s.secret: %q must be letters, digits and . _ / - (at most 128)", path, c.Secret))
	case reservedSecrets[c.Secret]:
		errs = append(errs, fmt.Errorf("%s.secret: %q is reserved for the agent's own certificate and trust bundle", path, c.Secret))
	}
	if h := c.header(); !headerRE.MatchString(h) {
		errs = append(errs, fmt.Errorf("%s.header: %q is not an HTTP header name", path, h))
	} else if protectedHeader(h) {
		errs = append(errs, fmt.Errorf("%s.header: %q carries identity or routing and cannot be injected", path, h))
	}
	if _, err := c.prefix(); err != nil {
		errs = append(errs, fmt.Errorf("%s.format: %w", path, err))
	}
	return errors.Join(errs...)
}

// header is the header the credential goes in, defaulted.
func (c *Credential) header() string {
	if c.Header == "" {
		return "Authorization"
	}
	return c.Header
}

// prefix returns what comes before %s in Format: Envoy's generic
// credential supports a prefix only.
func (c *Credential) prefix() (string, error) {
	f := c.Format
	if f == "" {
		return "", nil
	}
	if strings.Count(f, "%") != 1 || !strings.HasSuffix(f, "%s") {
		return "", fmt.Errorf("%q must be a prefix followed by one %%s at the end", f)
	}
	p := strings.TrimSuffix(f, "%s")
	if strings.ContainsAny(p, "\x00\r\n") {
		return "", fmt.Errorf("%q holds a control character", f)
	}
	return p, nil
}

// protectedHeader reports headers that identify the caller or steer
// routing: injecting a stored value there would forge them.
func protectedHeader(h string) bool {
	h = strings.ToLower(h)
	switch h {
	case "host", "x-forwarded-client-cert", "x-forwarded-for", "x-agent-id", "content-length", "transfer-encoding", "te", "connection":
		return true
	}
	return strings.HasPrefix(h, "x-envoy-")
}

func validateJWTProviders(path string, providers []JWTProvider) error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	seen := map[string]bool{}
	for i, jp := range providers {
		p := fmt.Sprintf("%s[%d]", path, i)
		if !nameRE.MatchString(jp.Name) {
			add("%s.name: %q must be a DNS label (lowercase letters, digits, -)", p, jp.Name)
		} else if seen[jp.Name] {
			add("%s.name: provider %q defined twice", p, jp.Name)
		}
		seen[jp.Name] = true
		if jp.Issuer == "" {
			add("%s.issuer: required", p)
		}
		for k, aud := range jp.Audiences {
			if aud == "" {
				add("%s.audiences[%d]: empty", p, k)
			}
		}
		switch {
		case jp.RemoteJWKS != "" && jp.LocalJWKS != "":
			add("%s: remoteJWKS and localJWKS are exclusive", p)
		case jp.RemoteJWKS != "":
			if _, _, err := jwksTarget(jp.RemoteJWKS); err != nil {
				add("%s.remoteJWKS: %v", p, err)
			}
		case jp.LocalJWKS != "":
			var set struct {
				Keys []json.RawMessage `json:"keys"`
			}
			if err := json.Unmarshal([]byte(jp.LocalJWKS), &set); err != nil {
				add("%s.localJWKS: %v", p, err)
			} else if len(set.Keys) == 0 {
				add("%s.localJWKS: no keys", p)
			}
		default:
			add("%s: one of remoteJWKS or localJWKS is required", p)
		}
	}
	return errors.Join(errs...)
}

// jwksTarget returns the host and port of an https JWKS URI.
func jwksTarget(uri string) (host string, port uint32, err error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", 0, err
	}
	if u.Scheme != "https" {
		return "", 0, fmt.Errorf("%q must be an https URI", uri)
	}
	if u.Hostname() == "" || u.User != nil || u.Fragment != "" {
		return "", 0, fmt.Errorf("%q must name a host, with no user or fragment", uri)
	}
	port = 443
	if ps := u.Port(); ps != "" {
		n, err := strconv.ParseUint(ps, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("%q: bad port", uri)
		}
		port = uint32(n)
	}
	return u.Hostname(), port, nil
}

// ErrWildcardAddress: an address to dial has a wildcard host (0.0.0.0,
// ::), which is a listen address: every Envoy would dial its own host.
var ErrWildcardAddress = errors.New("wildcard address")

// CheckDialAddress checks a host:port address that Envoys dial: a
// non-empty host that is not a wildcard, and a port in 1-65535.
func CheckDialAddress(addr string) error {
	host, _, err := splitHostPort(addr)
	if err != nil {
		return err
	}
	if IsWildcardHost(host) {
		return fmt.Errorf("address %s: %w: it means \"every local address\" to a listener, and an Envoy dialling it reaches its own host", addr, ErrWildcardAddress)
	}
	return nil
}

// IsWildcardHost reports whether host is an unspecified IP address
// (0.0.0.0, ::) or empty.
func IsWildcardHost(host string) bool {
	if host == "" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsUnspecified()
}

// checkHostPort checks a host:port address with a non-empty host and a
// port in 1-65535.
func checkHostPort(addr string) error {
	_, _, err := splitHostPort(addr)
	return err
}

func splitHostPort(addr string) (string, uint32, error) {
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		return "", 0, fmt.Errorf("address %s: missing host", addr)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("address %s: port must be 1-65535", addr)
	}
	return host, uint32(n), nil
}
