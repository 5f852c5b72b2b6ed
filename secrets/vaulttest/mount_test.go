package vaulttest_test

import vault "github.com/hashicorp/vault/api"

var vaultMount = vault.MountInput{Type: "pki", Config: vault.MountConfigInput{MaxLeaseTTL: "87600h"}}
