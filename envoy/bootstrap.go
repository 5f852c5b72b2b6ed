package envoy

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names and files of the bootstrap.
const (
	// ClusterXDS is the bootstrap's static cluster to meshward's xDS server.
	ClusterXDS = "meshward-xds"
	// Names of the file-based SDS secrets the xDS client uses.
	SecretXDSClient = "xds-client"
	SecretXDSCA     = "xds-ca"
	// Files in BootstrapOptions.CertDir.
	XDSCertFile      = "cert.pem"        // client certificate chain, PEM
	XDSKeyFile       = "key.pem"         // its private key, PEM
	XDSCAFile        = "ca.pem"          // trust bundle for the xDS server, PEM
	XDSClientSDSFile = "xds-client.yaml" // SDS file naming the two above
	XDSCASDSFile     = "xds-ca.yaml"     // SDS file naming the bundle

	// The xDS connection's liveness checks: an HTTP/2 PING every
	// XDSKeepaliveInterval, the connection closed when one is not answered
	// within XDSKeepaliveTimeout; and TCP keepalive probes after
	// XDSTCPKeepaliveTime idle, every XDSTCPKeepaliveInterval, up to
	// XDSTCPKeepaliveProbes. A replica that vanished without closing the
	// connection is left within about 15 s (HTTP/2) or 25 s (TCP), and
	// Envoy reconnects, to another replica behind the address if there is
	// one. The xDS server accepts pings every 5 s or more.
	XDSKeepaliveInterval    = 10 * time.Second
	XDSKeepaliveTimeout     = 5 * time.Second
	XDSTCPKeepaliveTime     = 10 * time.Second
	XDSTCPKeepaliveInterval = 5 * time.Second
	XDSTCPKeepaliveProbes   = 3

	DefaultNodeCluster = "meshward"
	DefaultAdminPort   = 9901
	DefaultCertDir     = "/etc/meshward/xds"
)

// BootstrapOptions says where meshward's xDS server is and how to reach it.
type BootstrapOptions struct {
	// XDSAddress (host:port) of meshward's xDS server. Required.
	XDSAddress string
	// TrustDomain of the mesh. Required unless Insecure.
	TrustDomain string
	// XDSServerSPIFFEID the xDS server's certificate must carry; empty
	// accepts any SPIFFE ID of the trust domain.
	XDSServerSPIFFEID string
	// Insecure talks xDS in plaintext, without the client certificate.
	// Local demos only: anyone reaching the port gets any node's secrets.
	Insecure bool
	// CertDir is the absolute folder, on the Envoy host, that holds the
	// XDS* files. Default DefaultCertDir.
	CertDir string
	// Cluster is the node's cluster. Default DefaultNodeCluster.
	Cluster string
	// AdminPort of Envoy's admin server, always on 127.0.0.1. Default:
	// the agent's AdminPort, else DefaultAdminPort. Each Envoy on a host
	// needs its own (see CheckAdminPort).
	AdminPort uint32
	// AdminSocket, when set, is the absolute path of a unix socket (mode
	// 0600) Envoy's admin server listens on instead of a loopback port.
	AdminSocket string
	// NodeID is the node's id. Default: the agent's name. In Kubernetes
	// mode each pod's Envoy may have its own, <agent>.<pod>.<namespace>
	// (PodNodeID), which meshward maps back to the agent.
	NodeID string
}

// PodNodeID is the node id of agent's Envoy in pod of namespace:
// <agent>.<pod>.<namespace>. Agent and namespace are DNS labels and pod a
// DNS subdomain (Kubernetes' rules), so the id reads back unambiguously.
func PodNodeID(agent, pod, namespace string) (string, error) {
	if !nameRE.MatchString(agent) || !nameRE.MatchString(namespace) {
		return "", fmt.Errorf("node id of %q in pod %q of namespace %q: the agent and the namespace must be DNS labels", agent, pod, namespace)
	}
	if !isDNSSubdomain(pod) {
		return "", fmt.Errorf("node id of %q: pod name %q is not a DNS subdomain", agent, pod)
	}
	return agent + "." + pod + "." + namespace, nil
}

// ParsePodNodeID splits a node id made by PodNodeID; false for any other.
func ParsePodNodeID(node string) (agent, pod, namespace string, ok bool) {
	agent, rest, ok := strings.Cut(node, ".")
	i := strings.LastIndexByte(rest, '.')
	if !ok || i < 0 {
		return "", "", "", false
	}
	pod, namespace = rest[:i], rest[i+1:]
	if !nameRE.MatchString(agent) || !nameRE.MatchString(namespace) || !isDNSSubdomain(pod) {
		return "", "", "", false
	}
	return agent, pod, namespace, true
}

// isDNSSubdomain: at most 253 characters of dot-separated DNS labels.
func isDNSSubdomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !nameRE.MatchString(l) {
			return false
		}
	}
	return true
}

func (o *BootstrapOptions) withDefaults() BootstrapOptions {
	c := *o
	setDefault(&c.CertDir, DefaultCertDir)
	setDefault(&c.Cluster, DefaultNodeCluster)
	if c.AdminSocket == "" {
		setDefault(&c.AdminPort, DefaultAdminPort)
	}
	return c
}

func (o *BootstrapOptions) validate() error {
	var errs []error
	if err := CheckDialAddress(o.XDSAddress); err != nil {
		errs = append(errs, fmt.Errorf("xds address: %w", err))
	}
	if !o.Insecure {
		td, err := spiffeid.TrustDomainFromString(o.TrustDomain)
		if err != nil || o.TrustDomain == "" {
			errs = append(errs, fmt.Errorf("trust domain: %q is not a trust domain", o.TrustDomain))
		}
		if o.XDSServerSPIFFEID != "" {
			if id, err := spiffeid.FromString(o.XDSServerSPIFFEID); err != nil {
				errs = append(errs, fmt.Errorf("xds server spiffe id: %w", err))
			} else if id.TrustDomain() != td {
				errs = append(errs, fmt.Errorf("xds server spiffe id: %q is not in trust domain %q", o.XDSServerSPIFFEID, o.TrustDomain))
			}
		}
	}
	if o.CertDir != "" && !path.IsAbs(o.CertDir) {
		errs = append(errs, fmt.Errorf("cert dir: %q must be absolute", o.CertDir))
	}
	if o.AdminPort > 65535 {
		errs = append(errs, errors.New("admin port: must be 1-65535"))
	}
	if o.AdminSocket != "" {
		if !path.IsAbs(o.AdminSocket) {
			errs = append(errs, fmt.Errorf("admin socket: %q must be absolute", o.AdminSocket))
		}
		if o.AdminPort != 0 {
			errs = append(errs, errors.New("admin socket: exclusive with admin port"))
		}
	}
	return errors.Join(errs...)
}

// Bootstrap is the Envoy bootstrap of agent a: node id a.Name, admin on
// loopback only, and delta ADS to meshward's xDS server over mTLS, with
// the client certificate, key and CA bundle read from files in CertDir
// through file-based SDS with a watched directory, so they can be rotated
// without restarting Envoy (replace the files by an atomic rename or a
// symlink swap of the directory).
func Bootstrap(a Agent, opts BootstrapOptions) (*bootstrapv3.Bootstrap, error) {
	if !nameRE.MatchString(a.Name) {
		return nil, fmt.Errorf("bootstrap: node %q must be a DNS label", a.Name)
	}
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("bootstrap %q: %w", a.Name, err)
	}
	if opts.AdminPort == 0 {
		opts.AdminPort = a.AdminPort
	}
	o := opts.withDefaults()
	b := &builder{mesh: &Mesh{TrustDomain: o.TrustDomain, Options: Options{ConnectTimeout: DefaultConnectTimeout,
		MaxConcurrentStreams: DefaultMaxConcurrentStreams, InitialStreamWindowSize: DefaultInitialStreamWindowSize,
		InitialConnectionWindowSize: DefaultInitialConnectionWindowSize, BufferLimitBytes: DefaultBufferLimitBytes}}}

	xds := b.cluster(ClusterXDS, o.XDSAddress)
	// Keepalive on the long-lived ADS connection, so that a dead control
	// plane is noticed in seconds, not after the OS's two hours, and Envoy
	// reconnects (possibly to another replica).
	h2 := b.http2Options()
	h2.ConnectionKeepalive = &corev3.KeepaliveSettings{
		Interval: dur(XDSKeepaliveInterval),
		Timeout:  dur(XDSKeepaliveTimeout),
	}
	b.useHTTP2With(xds, h2)
	xds.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
		KeepaliveProbes:   wrapperspb.UInt32(XDSTCPKeepaliveProbes),
		KeepaliveTime:     wrapperspb.UInt32(uint32(XDSTCPKeepaliveTime / time.Second)),
		KeepaliveInterval: wrapperspb.UInt32(uint32(XDSTCPKeepaliveInterval / time.Second)),
	}}
	if !o.Insecure {
		san := b.trustDomainSAN()
		if o.XDSServerSPIFFEID != "" {
			san = exact(o.XDSServerSPIFFEID)
		}
		host, _, _ := splitHostPort(o.XDSAddress)
		xds.TransportSocket = &corev3.TransportSocket{
			Name: tlsTransportName,
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: b.any(&tlsv3.UpstreamTlsContext{
				Sni: sniFor(host),
				CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsParams:                      tlsParams(),
					TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{fileSDS(o.CertDir, SecretXDSClient, XDSClientSDSFile)},
					ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
						CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
							DefaultValidationContext: &tlsv3.CertificateValidationContext{
								MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: san}},
							},
							ValidationContextSdsSecretConfig: fileSDS(o.CertDir, SecretXDSCA, XDSCASDSFile),
						},
					},
					AlpnProtocols: []string{"h2"},
				},
			})},
		}
	}
	ads := &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
	bs := &bootstrapv3.Bootstrap{
		Node:            &corev3.Node{Id: cmp.Or(o.NodeID, a.Name), Cluster: o.Cluster},
		Admin:           &bootstrapv3.Admin{Address: adminAddress(o)},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{Clusters: []*clusterv3.Cluster{xds}},
		DynamicResources: &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_DELTA_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{
					TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterXDS}},
				}},
				SetNodeOnFirstMessageOnly: true,
			},
			LdsConfig: ads,
			CdsConfig: ads,
		},
	}
	if b.err != nil {
		return nil, fmt.Errorf("bootstrap %q: %w", a.Name, b.err)
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, fmt.Errorf("bootstrap %q: %w", a.Name, err)
	}
	return bs, nil
}

// adminAddress is the admin server's: a unix socket only the Envoy's user
// may open, or a loopback port.
func adminAddress(o BootstrapOptions) *corev3.Address {
	if o.AdminSocket != "" {
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: o.AdminSocket, Mode: 0o600}}}
	}
	return socketAddress(loopbackAddress, o.AdminPort)
}

// fileSDS reads secret name from file in dir, watching dir for rotation.
func fileSDS(dir, name, file string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
				Path:             path.Join(dir, file),
				WatchedDirectory: &corev3.WatchedDirectory{Path: dir},
			}},
		},
	}
}

// BootstrapSDSFiles returns the two SDS files (file name -> YAML) the
// bootstrap's xDS cluster reads from opts.CertDir; they point at the
// certificate, key and CA files next to them. Not needed when Insecure.
func BootstrapSDSFiles(opts BootstrapOptions) (map[string][]byte, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("bootstrap sds files: %w", err)
	}
	o := opts.withDefaults()
	dir := o.CertDir
	watched := &corev3.WatchedDirectory{Path: dir}
	file := func(f string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path.Join(dir, f)}}
	}
	secrets := map[string]*tlsv3.Secret{
		XDSClientSDSFile: {Name: SecretXDSClient, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: file(XDSCertFile),
			PrivateKey:       file(XDSKeyFile),
			WatchedDirectory: watched,
		}}},
		XDSCASDSFile: {Name: SecretXDSCA, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:        file(XDSCAFile),
			WatchedDirectory: watched,
		}}},
	}
	out := make(map[string][]byte, len(secrets))
	for name, s := range secrets {
		if err := s.ValidateAll(); err != nil {
			return nil, fmt.Errorf("bootstrap sds files: %w", err)
		}
		a := &anypb.Any{}
		if err := anypb.MarshalFrom(a, s, deterministic); err != nil {
			return nil, fmt.Errorf("bootstrap sds files: %w", err)
		}
		y, err := MarshalYAML(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{a}})
		if err != nil {
			return nil, fmt.Errorf("bootstrap sds files: %w", err)
		}
		out[name] = y
	}
	return out, nil
}
