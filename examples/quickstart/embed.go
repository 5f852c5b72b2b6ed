// Package quickstart embeds meshward's default configuration: the
// reference workload (agents planner, viewer and executor in trust domain
// mesh.local, their rules and message schemas) that `meshward serve` runs
// when no --config is given.
package quickstart

import "embed"

// Config is meshward.yaml.
//
//go:embed meshward.yaml
var Config []byte

// Files holds meshward.yaml and every file it names, so relative names in
// it resolve without a file system.
//
//go:embed meshward.yaml schemas
var Files embed.FS
