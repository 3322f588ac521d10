#!/usr/bin/env bash
# rpk as the superuser over TLS + SCRAM, for the healthcheck and init.sh.
# Usage: rpk.sh ARGS... (e.g. rpk.sh cluster info). The settings travel as rpk's
# RPK_* environment variables: the password stays off the command line.
set -euo pipefail
export RPK_BROKERS=${RPK_BROKERS:-redpanda:9093}
export RPK_TLS_ENABLED=true RPK_TLS_CA=/certs/ca.crt
export RPK_SASL_MECHANISM=SCRAM-SHA-512 RPK_USER=admin
RPK_PASS=$(cat /run/secrets/redpanda_admin_password)
export RPK_PASS
export RPK_ADMIN_HOSTS=${RPK_ADMIN_HOSTS:-redpanda:9644}
export RPK_ADMIN_TLS_ENABLED=true RPK_ADMIN_TLS_CA=/certs/ca.crt
exec /usr/bin/rpk "$@"
