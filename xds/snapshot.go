package xds

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// ErrInconsistent marks a snapshot that was not set because it references
// something it does not contain.
var ErrInconsistent = errors.New("inconsistent snapshot")

// typeSlots are the xDS types a node snapshot carries, in ADS push order.
var typeSlots = []struct {
	url   resource.Type
	label string
	get   func(*NodeResources) []types.Resource
}{
	{resource.ClusterType, "cluster", func(n *NodeResources) []types.Resource { return n.Clusters }},
	{resource.EndpointType, "endpoint", func(n *NodeResources) []types.Resource { return n.Endpoints }},
	{resource.ListenerType, "listener", func(n *NodeResources) []types.Resource { return n.Listeners }},
	{resource.RouteType, "route", func(n *NodeResources) []types.Resource { return n.Routes }},
	{resource.SecretType, "secret", func(n *NodeResources) []types.Resource { return n.Secrets }},
}

// typeLabel is the metric label of an xDS type URL.
func typeLabel(typeURL string) string {
	for _, s := range typeSlots {
		if s.url == typeURL {
			return s.label
		}
	}
	return "other"
}

// builtSnapshot is a snapshot ready to be set, with what the server needs
// to know about it.
type builtSnapshot struct {
	snap     *cache.Snapshot
	versions map[resource.Type]string // per type, content hash (endpoints only when the node has some)
	secrets  map[string]struct{}      // secret names the node owns
}

// buildSnapshot turns a node's resources into a snapshot whose per-type
// versions are content hashes, after checking that every SDS secret a
// listener or cluster references is part of it. refs memoises reference
// walks by resource content (nil: no memo).
func buildSnapshot(nr *NodeResources, refs *refCache) (*builtSnapshot, error) {
	if nr == nil {
		return nil, errors.New("build snapshot: no resources")
	}
	b := &builtSnapshot{snap: &cache.Snapshot{VersionMap: map[string]map[string]string{}}, versions: map[resource.Type]string{}, secrets: map[string]struct{}{}}
	for _, slot := range typeSlots {
		items := slot.get(nr)
		version, perResource, err := contentVersion(slot.url, items)
		if err != nil {
			return nil, fmt.Errorf("build snapshot: %s: %w", slot.label, err)
		}
		// A node without EDS clusters never subscribes to endpoints: the
		// type is not among its versions, which it would never ACK.
		if slot.url != resource.EndpointType || len(items) > 0 {
			b.versions[slot.url] = version
		}
		b.snap.Resources[cache.GetResponseType(slot.url)] = cache.NewResources(version, items)
		// The delta version map, from the same encoding (what the cache's
		// ConstructVersionMap would compute with a second marshal).
		b.snap.VersionMap[slot.url] = perResource
	}
	for _, s := range nr.Secrets {
		b.secrets[cache.GetResourceName(s)] = struct{}{}
	}
	if err := checkSecretRefs(nr, b.secrets, b.snap.VersionMap, refs); err != nil {
		return nil, err
	}
	if err := b.snap.Consistent(); err != nil {
		return nil, fmt.Errorf("build snapshot: %w: %w", ErrInconsistent, err)
	}
	return b, nil
}

// contentVersion hashes the deterministic encoding of every resource of one
// type, sorted by name: the same content gives the same version on every
// replica and after every restart; different content a different one.
// It also returns each resource's own hash, by name: the delta protocol's
// per-resource version.
func contentVersion(typeURL resource.Type, items []types.Resource) (string, map[string]string, error) {
	type named struct {
		name string
		raw  []byte
	}
	all := make([]named, 0, len(items))
	seen := make(map[string]struct{}, len(items))
	want := strings.TrimPrefix(typeURL, resource.APITypePrefix)
	for i, r := range items {
		if r == nil {
			return "", nil, fmt.Errorf("resource %d is nil", i)
		}
		if got := string(r.ProtoReflect().Descriptor().FullName()); got != want {
			return "", nil, fmt.Errorf("resource %d is a %s, want %s", i, got, want)
		}
		name := cache.GetResourceName(r)
		if name == "" {
			return "", nil, fmt.Errorf("resource %d has no name", i)
		}
		if _, dup := seen[name]; dup {
			return "", nil, fmt.Errorf("duplicate resource name %q", name)
		}
		seen[name] = struct{}{}
		raw, err := cache.MarshalResource(r)
		if err != nil {
			return "", nil, fmt.Errorf("marshal %q: %w", name, err)
		}
		all = append(all, named{name, raw})
	}
	slices.SortFunc(all, func(a, b named) int { return strings.Compare(a.name, b.name) })
	perResource := make(map[string]string, len(all))
	h := sha256.New()
	var n [8]byte
	for _, r := range all {
		binary.BigEndian.PutUint64(n[:], uint64(len(r.name)))
		h.Write(n[:])
		h.Write([]byte(r.name))
		binary.BigEndian.PutUint64(n[:], uint64(len(r.raw)))
		h.Write(n[:])
		h.Write(r.raw)
		perResource[r.name] = cache.HashResource(r.raw)
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), perResource, nil
}

// checkSecretRefs verifies that every SDS secret referenced anywhere in a
// listener or cluster (transport sockets, filters such as the credential
// injector, nested Any configs) is in the snapshot. A reference whose
// sds_config is a file path is served by the node's filesystem and skipped.
// hashes are the per-resource content hashes by type and name.
func checkSecretRefs(nr *NodeResources, have map[string]struct{}, hashes map[string]map[string]string, memo *refCache) error {
	var errs []error
	for _, group := range []struct {
		url   resource.Type
		items []types.Resource
	}{{resource.ListenerType, nr.Listeners}, {resource.ClusterType, nr.Clusters}} {
		for _, r := range group.items {
			name := cache.GetResourceName(r)
			key := group.url + "/" + hashes[group.url][name]
			refs, ok := memo.get(key)
			if !ok {
				var err error
				if refs, err = secretRefs(r); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					continue
				}
				memo.put(key, refs)
			}
			for _, ref := range refs {
				if _, ok := have[ref]; !ok {
					errs = append(errs, fmt.Errorf("%s references SDS secret %q that is not in the snapshot", name, ref))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("build snapshot: %w: %w", ErrInconsistent, errors.Join(errs...))
	}
	return nil
}

// refCache memoises the secret references of listeners and clusters by
// their content hash: a rotation or a change elsewhere rebuilds a node's
// snapshot with the same listeners and clusters, which need no new walk.
// It is emptied when full. A nil *refCache memoises nothing.
type refCache struct {
	mu  sync.Mutex
	m   map[string][]string
	max int
}

func newRefCache(maxEntries int) *refCache {
	return &refCache{m: map[string][]string{}, max: maxEntries}
}

func (c *refCache) get(key string) ([]string, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	refs, ok := c.m[key]
	return refs, ok
}

func (c *refCache) put(key string, refs []string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[key] = refs
}

var sdsSecretConfigName = (&tlsv3.SdsSecretConfig{}).ProtoReflect().Descriptor().FullName()

// secretRefs returns the names of the SDS secrets a resource references,
// walking every field and every Any. An Any whose type is not linked into
// the binary cannot be inspected and is an error (fail closed).
func secretRefs(m proto.Message) ([]string, error) {
	var out []string
	var walk func(protoreflect.Message, int) error
	walk = func(msg protoreflect.Message, depth int) error {
		if depth > 64 {
			return errors.New("resource nested too deeply")
		}
		if msg.Descriptor().FullName() == sdsSecretConfigName {
			c, ok := msg.Interface().(*tlsv3.SdsSecretConfig)
			if !ok {
				return errors.New("unexpected SdsSecretConfig type")
			}
			if !fileBased(c.GetSdsConfig()) {
				out = append(out, c.GetName())
			}
			return nil
		}
		if a, ok := msg.Interface().(*anypb.Any); ok {
			mt, err := protoregistry.GlobalTypes.FindMessageByURL(a.GetTypeUrl())
			if err != nil {
				return fmt.Errorf("cannot inspect %q: %w", a.GetTypeUrl(), err)
			}
			inner := mt.New()
			if err := proto.Unmarshal(a.GetValue(), inner.Interface()); err != nil {
				return fmt.Errorf("cannot inspect %q: %w", a.GetTypeUrl(), err)
			}
			return walk(inner, depth+1)
		}
		var err error
		msg.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsMap():
				if fd.MapValue().Message() == nil {
					return true
				}
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					err = walk(mv.Message(), depth+1)
					return err == nil
				})
			case fd.Message() == nil:
			case fd.IsList():
				l := v.List()
				for i := 0; i < l.Len() && err == nil; i++ {
					err = walk(l.Get(i).Message(), depth+1)
				}
			default:
				err = walk(v.Message(), depth+1)
			}
			return err == nil
		})
		return err
	}
	if err := walk(m.ProtoReflect(), 0); err != nil {
		return nil, err
	}
	return out, nil
}

func fileBased(c *core.ConfigSource) bool {
	switch c.GetConfigSourceSpecifier().(type) {
	case *core.ConfigSource_Path, *core.ConfigSource_PathConfigSource:
		return true
	}
	return false
}
