#!/bin/sh
# compose's `minio-init`: the native stack's buckets with its default encryption
# (SSE-KMS with the static key indutech-local; deploy/local/components/minio.sh),
# through MinIO's own client over verified TLS. Idempotent.
set -eu
config=/tmp/mc
mkdir -p "$config/certs/CAs"
cp /certs/ca.crt "$config/certs/CAs/ca.crt"
MC_HOST_indutech="https://indutech-admin:$(cat /run/secrets/minio_root_password)@minio:9000"
export MC_HOST_indutech
for bucket in indutech-lake indutech-backup; do
    mc --config-dir "$config" mb --ignore-existing "indutech/$bucket"
    mc --config-dir "$config" encrypt set sse-kms indutech-local "indutech/$bucket"
done
mc --config-dir "$config" encrypt info indutech/indutech-lake
