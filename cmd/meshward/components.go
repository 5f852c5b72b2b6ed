package main

import "context"

// builders builds each component from the configuration.
var builders = map[string]func(ctx context.Context, d *serveDeps) (*component, error){
	"authz": buildAuthz,
}
