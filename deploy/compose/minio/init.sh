#!/bin/sh
# compose's `minio-init`: the native stack's buckets with its default encryption
# (SSE-KMS with the static key indutech-local; deploy/local/components/minio.sh),
# and one user per worker holding only its production rights: policies/<worker>.json
# is deploy/iam/<worker>.json on these buckets (rendered by `make k8s`, checked by
# `make lint`). Through MinIO's own client over verified TLS. Idempotent.
set -eu
config=/tmp/mc
mkdir -p "$config/certs/CAs"
cp /certs/ca.crt "$config/certs/CAs/ca.crt"
MC_HOST_indutech="https://indutech-admin:$(cat /run/secrets/minio_root_password)@minio:9000"
export MC_HOST_indutech
mc() { command mc --config-dir "$config" "$@"; }
for bucket in indutech-lake indutech-backup; do
    mc mb --ignore-existing "indutech/$bucket"
    mc encrypt set sse-kms indutech-local "indutech/$bucket"
done
mc encrypt info indutech/indutech-lake
for policy in /compose/minio/policies/*.json; do
    user=$(basename "$policy" .json)
    secret=/run/secrets/minio_$(echo "$user" | tr - _)_password
    [ -s "$secret" ] || { echo "minio-init: $secret is missing: run deploy/compose/make-secrets.sh" >&2; exit 1; }
    mc admin user add indutech "$user" "$(cat "$secret")"  # sets the password again if present
    mc admin policy create indutech "$user" "$policy"       # replaces the policy if present
    # attach refuses a policy already attached: that is the state we want
    if ! out=$(mc admin policy attach indutech "$user" --user "$user" 2>&1); then
        case $out in
            *"already"*) ;;
            *) echo "$out" >&2; exit 1 ;;
        esac
    fi
    echo "minio-init: user $user with policy $user"
done
