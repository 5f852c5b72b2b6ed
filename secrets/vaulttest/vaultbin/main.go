// Command vault is the HashiCorp Vault v1.13.0 server, built from its Go
// module for meshward's integration tests only. It is its own Go module so
// that Vault's dependency graph never enters meshward's.
//
// The go:debug line keeps Go 1.20's x509 parsing: a dependency of Vault
// 1.13 (gosnowflake 1.6.3) parses an embedded CA with a negative serial at
// start and panics under the stricter default of newer Go.
//
//go:debug x509negativeserial=1
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
