#!/usr/bin/env bash
# Provision once (state in /var/lib/samba), then serve LDAPS in the foreground.
set -euo pipefail
password="Aa1!$(cat "/run/secrets/$(echo "$DOMAIN" | tr '[:upper:]' '[:lower:]')_admin_password")"
if [[ ! -f /var/lib/samba/private/sam.ldb ]]; then
    samba-tool domain provision --use-rfc2307 --realm="$REALM" --domain="$DOMAIN" \
        --server-role=dc --dns-backend=NONE --adminpass="$password" \
        --option="tls enabled = yes" --option="tls certfile = /certs/server.crt" \
        --option="tls keyfile = /certs/server.key" --option="tls cafile = /certs/ca.crt"
fi
exec samba -i -M single
