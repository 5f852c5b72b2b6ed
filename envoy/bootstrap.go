package envoy

import (
	"errors"
	"fmt"
	"path"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/anypb"
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
	// AdminPort of Envoy's admin server, always on 127.0.0.1. Default
	// DefaultAdminPort.
	AdminPort uint32
}

func (o *BootstrapOptions) withDefaults() BootstrapOptions {
	c := *o
	setDefault(&c.CertDir, DefaultCertDir)
	setDefault(&c.Cluster, DefaultNodeCluster)
	setDefault(&c.AdminPort, DefaultAdminPort)
	return c
}

func (o *BootstrapOptions) validate() error {
	var errs []error
	if err := checkHostPort(o.XDSAddress); err != nil {
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
	o := opts.withDefaults()
	b := &builder{mesh: &Mesh{TrustDomain: o.TrustDomain, Options: Options{ConnectTimeout: DefaultConnectTimeout,
		MaxConcurrentStreams: DefaultMaxConcurrentStreams, InitialStreamWindowSize: DefaultInitialStreamWindowSize,
		InitialConnectionWindowSize: DefaultInitialConnectionWindowSize, BufferLimitBytes: DefaultBufferLimitBytes}}}

	xds := b.cluster(ClusterXDS, o.XDSAddress)
	b.useHTTP2(xds)
	// Keepalive on the long-lived ADS connection, so that a dead control
	// plane is noticed and Envoy reconnects (possibly to another replica).
	xds.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{}}
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
		Node: &corev3.Node{Id: a.Name, Cluster: o.Cluster},
		Admin: &bootstrapv3.Admin{
			Address: socketAddress(loopbackAddress, o.AdminPort),
		},
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
