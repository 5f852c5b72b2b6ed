package main

import (
	"github.com/meshward/meshward/envoy"
	"github.com/meshward/meshward/policy"
)

// envoyQuotas are the authorizer's quotas that the agents' Envoys can
// enforce too, as a coarse first line (envoy.Quota): those per caller
// alone. A quota limited to a rule or a tool stays the authorizer's:
// Envoy sees neither which rule allows a request nor which tool a
// JSON-RPC body calls, and counting more requests than the quota does
// would make Envoy stricter than the authorizer, not coarser.
func envoyQuotas(qs []policy.QuotaConfig) []envoy.Quota {
	var out []envoy.Quota
	for _, q := range qs {
		if q.Rule != "" || q.Tool != "" {
			continue
		}
		out = append(out, envoy.Quota{Name: q.Name, Callers: q.Callers, Rate: q.Rate, Per: q.Per, Burst: q.Burst})
	}
	return out
}

// envoyJSONRPCRoutes are the routes on which the Envoys answer a request
// over a quota with a JSON-RPC error, as the authorizer does.
func envoyJSONRPCRoutes(c *policy.JSONRPCConfig) []envoy.JSONRPCRoute {
	if c == nil {
		return nil
	}
	out := make([]envoy.JSONRPCRoute, 0, len(c.Routes))
	for _, r := range c.Routes {
		out = append(out, envoy.JSONRPCRoute{Hosts: r.Hosts, Path: r.Path, PathPrefix: r.PathPrefix})
	}
	return out
}
