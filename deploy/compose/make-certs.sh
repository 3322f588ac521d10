#!/usr/bin/env bash
# Certificates for the compose stack, made by the native stack's own code
# (deploy/local/components/certs.sh): one CA, one server certificate that also
# names every compose service a client dials, and a copy of the key for each
# server that runs as its own user, because the servers refuse a key that
# others can read (Samba, PostgreSQL) and each image runs as another uid.
#
# Run by compose's `certs` service as root into the `certs` volume
# (STACK_DIR=/state); runs the same way on a workstation for a look at the
# result (STACK_DIR=/tmp/x REPO_ROOT=$PWD deploy/compose/make-certs.sh; the
# chown is skipped when not root).
set -euo pipefail
REPO_ROOT=${REPO_ROOT:-/repo}
# The host names the containers dial (compose service names): the certificate's
# subjectAltName must hold each one, or hostname verification fails.
# tests/unit/deploy/test_compose.py checks this list against compose.yaml.
COMPOSE_TLS_HOSTS=(redpanda minio postgres cloudwatch samba-corp samba-aws)
# uid:gid of each server image's process (the key copies are theirs, mode 0600).
REDPANDA_UID=101:101      # docker.redpanda.com/redpandadata/redpanda
POSTGRES_UID=999:999      # postgres:15 (Debian)
ROOT_UID=0:0              # minio, moto and samba run as root in their images

sans=""
for host in "${COMPOSE_TLS_HOSTS[@]}"; do sans+="${sans:+,}DNS:$host"; done
export STACK_CERT_EXTRA_SANS=$sans

# shellcheck source=deploy/local/lib.sh
. "$REPO_ROOT/deploy/local/lib.sh"
# shellcheck source=deploy/local/components/certs.sh
. "$REPO_ROOT/deploy/local/components/certs.sh"
ensure_dirs
certs_start

# own_copy SRC DEST UID:GID MODE
own_copy() {
    install -D -m "$4" "$1" "$2"
    if (( EUID == 0 )); then chown "$3" "$2"; fi
}

own_copy "$CERTS/server.crt" "$CERTS/redpanda/server.crt" "$REDPANDA_UID" 0644
own_copy "$CERTS/server.key" "$CERTS/redpanda/server.key" "$REDPANDA_UID" 0600
own_copy "$CERTS/server.crt" "$CERTS/postgres/server.crt" "$POSTGRES_UID" 0644
own_copy "$CERTS/server.key" "$CERTS/postgres/server.key" "$POSTGRES_UID" 0600
# MinIO reads public.crt, private.key and trusts CAs/* in its --certs-dir.
own_copy "$CERTS/server.crt" "$CERTS/minio/public.crt" "$ROOT_UID" 0644
own_copy "$CERTS/server.key" "$CERTS/minio/private.key" "$ROOT_UID" 0600
own_copy "$CERTS/ca.crt" "$CERTS/minio/CAs/ca.crt" "$ROOT_UID" 0644
own_copy "$CERTS/server.key" "$CERTS/samba/key.pem" "$ROOT_UID" 0600
own_copy "$CERTS/server.key" "$CERTS/moto/server.key" "$ROOT_UID" 0600
# The shared server.key stays root's (0600): no client needs it.
chmod 0755 "$CERTS" "$CERTS"/*/
log "compose certificates in $CERTS for: ${COMPOSE_TLS_HOSTS[*]}"
