#!/usr/bin/env bash
# Vault's side of examples/kubernetes: PKI roles, policies and Kubernetes
# auth roles for meshward (issues every agent's SVID) and for planner's
# bootstrap (issues only planner's xDS client certificate).
#
#   VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=... ./vault-setup.sh
#
# Expects the PKI mount `pki` set up as docs/secrets.md says ("Setting up
# Vault"). Vault inside the cluster reads the API server's address, CA and
# its reviewer token from its own pod; elsewhere set KUBERNETES_HOST,
# KUBERNETES_CA_CERT (a PEM file) and TOKEN_REVIEWER_JWT (a token allowed
# to create TokenReviews, e.g. of a ServiceAccount bound as vault.yaml binds
# Vault's).
set -euo pipefail
TRUST_DOMAIN=${TRUST_DOMAIN:-mesh.local}

# meshward issues the SVID of every agent in the trust domain, and its own.
vault write pki/roles/agent allowed_uri_sans="spiffe://${TRUST_DOMAIN}/*" require_cn=false \
  allow_any_name=false enforce_hostnames=false key_type=ec key_bits=256 max_ttl=24h no_store=true
vault policy write meshward - <<'HCL'
path "pki/issue/agent" { capabilities = ["create", "update"] }
path "pki/roles/agent" { capabilities = ["read"] }
path "pki/issuers"     { capabilities = ["list"] }
path "pki/issuer/*"    { capabilities = ["read"] }
HCL

# planner's bootstrap issues planner's SPIFFE ID only.
vault write pki/roles/agent-planner allowed_uri_sans="spiffe://${TRUST_DOMAIN}/ns/agents/sa/planner" require_cn=false \
  allow_any_name=false enforce_hostnames=false key_type=ec key_bits=256 max_ttl=24h no_store=true
vault policy write agent-planner - <<'HCL'
path "pki/issue/agent-planner" { capabilities = ["create", "update"] }
path "pki/issuers"             { capabilities = ["list"] }
path "pki/issuer/*"            { capabilities = ["read"] }
HCL

if ! vault auth list -format=json | grep -q '"kubernetes/"'; then
  vault auth enable kubernetes
fi
config=(kubernetes_host="${KUBERNETES_HOST:-https://kubernetes.default.svc}")
if [[ -n ${KUBERNETES_CA_CERT:-} ]]; then config+=(kubernetes_ca_cert=@"$KUBERNETES_CA_CERT"); fi
if [[ -n ${TOKEN_REVIEWER_JWT:-} ]]; then config+=(token_reviewer_jwt="$TOKEN_REVIEWER_JWT"); fi
vault write auth/kubernetes/config "${config[@]}"

# Each role binds one ServiceAccount: the token of no other pod logs in.
vault write auth/kubernetes/role/meshward bound_service_account_names=meshward \
  bound_service_account_namespaces=meshward token_policies=meshward token_ttl=1h token_max_ttl=24h
vault write auth/kubernetes/role/agent-planner bound_service_account_names=planner \
  bound_service_account_namespaces=agents token_policies=agent-planner token_ttl=1h token_max_ttl=24h
