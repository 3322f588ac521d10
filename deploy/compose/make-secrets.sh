#!/usr/bin/env bash
# The secret files compose.yaml names, made once (random, no trailing newline:
# ldapsearch -y and MinIO read the whole file). Local throwaway values, never
# production ones. Existing files are kept, so a stack's volumes keep working.
# Modes: the folder 0700 (only you reach the files on the host), each file 0644:
# compose bind-mounts file secrets with their host owner and mode (uid/gid/mode
# are swarm-only), and the containers read them as their own users (Redpanda
# 101, PostgreSQL 999, the workers 10001).
#   deploy/compose/make-secrets.sh [DIR]   (default: deploy/compose/secrets)
set -euo pipefail
dir=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"
umask 022
made=()
put() {  # put NAME VALUE
    [[ -s $dir/$1 ]] && return 0
    printf '%s' "$2" > "$dir/$1"; made+=("$1")
}
hex() { openssl rand -hex 16 | tr -d '\n'; }
put redpanda_admin_password "$(hex)"
for worker in iot_ingest iot_to_s3 iot_aggregator sql_backup sql_to_redshift identity_sync metrics_shipper; do
    put "kafka_${worker}_password" "$(hex)"
done
put minio_root_password "$(hex)"
# a MinIO user per worker with rights on S3 (minio/init.sh)
for worker in iot_ingest iot_to_s3 iot_aggregator sql_backup sql_to_redshift identity_sync; do
    put "minio_${worker}_password" "$(hex)"
done
# MinIO's static KMS key: NAME:32 random bytes in base64 (the native stack's key name).
put minio_kms_key "indutech-local:$(openssl rand -base64 32 | tr -d '\n')"
put pg_password "$(hex)"
# Samba's complexity rule wants upper, lower, digit and symbol: the native stack's prefix.
put corp_admin_password "Aa1_$(hex)"
put aws_admin_password "Aa1_$(hex)"
put grafana_admin_password "$(hex)"
echo "secrets in $dir${made[*]:+ (new: ${made[*]})}"
