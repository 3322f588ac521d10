#!/usr/bin/env bash
# Certificates for the compose stack, made by the native stack's own code.
set -euo pipefail
REPO_ROOT=/repo
# shellcheck source=deploy/local/lib.sh
. "$REPO_ROOT/deploy/local/lib.sh"
# shellcheck source=deploy/local/components/certs.sh
. "$REPO_ROOT/deploy/local/components/certs.sh"
ensure_dirs
certs_start
mkdir -p "$CERTS/minio/CAs"
cp "$CERTS/server.crt" "$CERTS/minio/public.crt"
cp "$CERTS/server.key" "$CERTS/minio/private.key"
cp "$CERTS/ca.crt" "$CERTS/minio/CAs/ca.crt"
