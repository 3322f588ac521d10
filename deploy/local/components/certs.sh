# The stack's own certificate authority and one server certificate for every
# service, so tests walk the same verified-TLS paths as production.
# STACK_CERT_EXTRA_SANS (e.g. DNS:redpanda,DNS:minio) adds names: compose's containers
# reach each other by service name (deploy/compose/make-certs.sh).
# shellcheck shell=bash

CERT_DAYS=825

certs_install() { apt_ensure openssl; }

certs_start() {
    ensure_dirs
    if [[ -s $CERTS/server.crt ]] && openssl x509 -checkend 86400 -noout -in "$CERTS/server.crt" >/dev/null; then
        return 0
    fi
    log "creating the stack CA and server certificate in $CERTS"
    (
        cd "$CERTS" || exit 1
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/O=InduTech Flows local stack/CN=InduTech Local CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
            -keyout ca.key -out ca.crt 2>/dev/null
        cat > server.ext <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,IP:$CORP_DC_IP,IP:$AWS_DC_IP,DNS:corp-dc.corp.indutech.test,DNS:aws-dc.aws.indutech.test,DNS:corp.indutech.test,DNS:aws.indutech.test${STACK_CERT_EXTRA_SANS:+,$STACK_CERT_EXTRA_SANS}
EXT
        # RSA for the servers: Samba's GnuTLS and psqlODBC's libpq both take it everywhere.
        openssl req -newkey rsa:2048 -nodes -subj "/O=InduTech Flows local stack/CN=localhost" \
            -keyout server.key -out server.csr 2>/dev/null
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days "$CERT_DAYS" \
            -extfile server.ext -out server.crt 2>/dev/null
        cat server.crt ca.crt > server-chain.crt
        rm -f server.csr ca.srl
        chmod 644 ca.crt server.crt server-chain.crt
    ) || die "certificate generation failed"
}

certs_stop() { :; }

certs_status() {
    local until
    until=$(openssl x509 -enddate -noout -in "$CERTS/server.crt" 2>/dev/null | cut -d= -f2) || return 1
    printf 'CA %s, server certificate valid until %s' "$CERTS/ca.crt" "$until"
    openssl verify -CAfile "$CERTS/ca.crt" "$CERTS/server.crt" >/dev/null 2>&1
}
