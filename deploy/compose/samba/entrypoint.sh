#!/usr/bin/env bash
# A Samba AD domain controller for compose, set up as the native stack's
# (deploy/local/components/samba.sh): provisioned once into /var/lib/samba/dc
# (a volume), LDAPS on 636 with the stack certificate, the OU the directory sync
# works in, and AWS Managed AD's password policy. Samba runs in the foreground
# as a child of this script, which forwards SIGTERM to it.
# Environment: DOMAIN (corp | aws), REALM, SYNC_OU (the OU to create).
# Secret: /run/secrets/${DOMAIN}_admin_password, the Administrator password as is.
set -euo pipefail
dir=/var/lib/samba/dc
name=${DOMAIN,,}
base_dn="DC=$name,DC=indutech,DC=test"
password=$(cat "/run/secrets/${name}_admin_password")

if [[ ! -e $dir/.provisioned ]]; then
    rm -rf "$dir"; mkdir -p "$dir"
    samba-tool domain provision --configfile=/dev/null --server-role=dc --dns-backend=NONE \
        --realm="$REALM" --domain="${DOMAIN^^}" --host-name="$name-dc" \
        --adminpass="$password" --targetdir="$dir" \
        --option="server services = -s3fs -nbt -wrepl -dnsupdate -ntp_signd -winbindd -dns" \
        --option="tls enabled = yes" --option="tls certfile = /certs/server.crt" \
        --option="tls keyfile = /certs/samba/key.pem" --option="tls cafile = /certs/ca.crt"
    touch "$dir/.provisioned"
fi

samba -i -M single -s "$dir/etc/smb.conf" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

ldap() {
    local tool=$1; shift
    LDAPTLS_CACERT=/certs/ca.crt LDAPTLS_REQCERT=demand "$tool" -x -o nettimeout=5 \
        -H "ldaps://samba-$name:636" -D "CN=Administrator,CN=Users,$base_dn" -y <(printf '%s' "$password") "$@"
}
until ldap ldapsearch -LLL -b "$base_dn" -s base dn >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit $?; }
    sleep 0.5
done
if [[ ! -e $dir/.bootstrapped ]]; then
    ldap ldapadd -c >/dev/null 2>&1 <<LDIF || true
dn: $SYNC_OU,$base_dn
objectClass: organizationalUnit
description: InduTech Flows directory sync scope

dn: OU=Users,$SYNC_OU,$base_dn
objectClass: organizationalUnit

dn: OU=Groups,$SYNC_OU,$base_dn
objectClass: organizationalUnit
LDIF
    # AWS Managed Microsoft AD's default policy (the native stack sets the same on `aws`).
    samba-tool domain passwordsettings set -H "$dir/private/sam.ldb" \
        --complexity=on --min-pwd-length=7 --history-length=24 --min-pwd-age=1 --max-pwd-age=42 >/dev/null
    touch "$dir/.bootstrapped"
fi
# The healthcheck looks for this file: provisioned, serving LDAPS, OUs in place.
touch /tmp/ready
wait "$pid"
