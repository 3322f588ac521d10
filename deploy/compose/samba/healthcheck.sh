#!/usr/bin/env bash
# Healthy: bootstrapped, and an authenticated LDAPS search verified against the stack CA answers.
set -euo pipefail
name=${DOMAIN,,}
[[ -e /tmp/ready ]]
LDAPTLS_CACERT=/certs/ca.crt LDAPTLS_REQCERT=demand ldapsearch -x -LLL -o nettimeout=5 \
    -H "ldaps://samba-$name:636" -D "CN=Administrator,CN=Users,DC=$name,DC=indutech,DC=test" \
    -y "/run/secrets/${name}_admin_password" -b "DC=$name,DC=indutech,DC=test" -s base dn >/dev/null
