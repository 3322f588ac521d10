# MinIO, standing in for S3: HTTPS on 127.0.0.1:9000 with the stack's
# certificates, a static KMS key so SSE-S3 and SSE-KMS both work, and the lake
# and backup buckets with default SSE-KMS encryption. Built from source with
# `go install` (MinIO publishes no Debian package); the binary is cached in
# $STACK_CACHE/bin, so only the first install pays the ~5 minute build.
# shellcheck shell=bash

# github.com/minio/minio has no semver tags, so @latest resolves to a pseudo-version;
# this is what it resolved to when the stack was written (go version -m minio).
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_PORT=9000
MINIO_CONSOLE_PORT=9001
MINIO_REGION=us-east-1
MINIO_ROOT_USER=indutech-admin
MINIO_KMS_KEY_ID=indutech-local
MINIO_LAKE_BUCKET=indutech-lake
MINIO_BACKUP_BUCKET=indutech-backup

minio_bin() { echo "$STACK_CACHE/bin/minio"; }
minio_home() { echo "$STACK_DIR/minio"; }

minio_install() {
    local bin gobin built
    bin=$(minio_bin)
    [[ -x $bin ]] && return 0
    mkdir -p "$STACK_CACHE/bin"
    command -v go >/dev/null || die "MinIO is built with 'go install' and no Go toolchain is on PATH (Go >= 1.24 from https://go.dev/dl; Debian 12's golang is too old)"
    # A binary a developer already built with `go install github.com/minio/minio@...`.
    gobin=$(go env GOBIN); [[ -n $gobin ]] || gobin="$(go env GOPATH)/bin"
    if [[ -x $gobin/minio ]]; then
        built=$(go version -m "$gobin/minio" 2>/dev/null | awk '$1 == "mod" && $2 == "github.com/minio/minio" {print $3}')
        if [[ -n $built ]]; then
            [[ $built == "$MINIO_VERSION" ]] || warn "using $gobin/minio ($built), not the pinned $MINIO_VERSION"
            log "copying MinIO $built from $gobin/minio to $bin"
            cp "$gobin/minio" "$bin.tmp" && mv -f "$bin.tmp" "$bin" && return 0
        fi
    fi
    local buildlog="$LOGS/minio-build.log" pid start=$SECONDS
    mkdir -p "$LOGS"
    log "building MinIO $MINIO_VERSION with go install (about 5 min on 2 cores, once; log: $buildlog)"
    (
        cd /tmp || exit 1
        GOBIN="$STACK_CACHE/bin.build" CGO_ENABLED=0 \
            go install "github.com/minio/minio@$MINIO_VERSION"
    ) >"$buildlog" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if (( (SECONDS - start) % 30 == 0 )); then
            log "still building MinIO ($(( SECONDS - start ))s; $(grep -c '^go: downloading' "$buildlog" 2>/dev/null) modules downloaded so far)"
        fi
    done
    wait "$pid" || die "the MinIO build failed; see $buildlog"
    mv -f "$STACK_CACHE/bin.build/minio" "$bin" || die "the MinIO build left no binary; see $buildlog"
    rmdir "$STACK_CACHE/bin.build" 2>/dev/null || true
    log "MinIO built in $(( SECONDS - start ))s: $bin"
}

# The KMS master key: 32 random bytes, base64, generated once like ensure_secret's.
minio_kms_key() {
    local file="$SECRETS/minio_kms_key"
    if [[ ! -s $file ]]; then
        (umask 077; openssl rand -base64 32 | tr -d '\n' > "$file")
    fi
    cat "$file"
}

minio_live() {
    curl -fsS -o /dev/null --max-time 3 --cacert "$CERTS/ca.crt" "https://localhost:$MINIO_PORT/minio/health/live"
}

# minio_s3 METHOD PATH [CURL ARGS...]: a SigV4-signed request as the root user;
# the credentials reach curl on stdin, never on its command line.
minio_s3() {
    local method=$1 path=$2; shift 2
    printf 'user = "%s:%s"\n' "$MINIO_ROOT_USER" "$(ensure_secret minio_root_password)" |
        curl -sS -K - --max-time 10 --cacert "$CERTS/ca.crt" --aws-sigv4 "aws:amz:$MINIO_REGION:s3" \
            -X "$method" "$@" "https://localhost:$MINIO_PORT$path"
}

minio_bucket_encryption_xml() {
    printf '<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>%s</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>' "$MINIO_KMS_KEY_ID"
}

# Buckets with default SSE-KMS; HEAD + GET per bucket when they already exist.
minio_bootstrap() {
    local b code body md5 sha
    body=$(minio_bucket_encryption_xml)
    md5=$(printf '%s' "$body" | openssl dgst -md5 -binary | base64)
    sha=$(printf '%s' "$body" | sha256sum | cut -d' ' -f1)
    for b in "$MINIO_LAKE_BUCKET" "$MINIO_BACKUP_BUCKET"; do
        code=$(minio_s3 HEAD "/$b" -I -o /dev/null -w '%{http_code}') || code=000
        case $code in
            200) ;;
            404)
                log "creating bucket s3://$b"
                code=$(minio_s3 PUT "/$b" -o /dev/null -w '%{http_code}') || code=000
                [[ $code == 200 ]] || die "creating bucket $b failed (HTTP $code)" ;;
            *) die "MinIO answered HTTP $code to HEAD /$b" ;;
        esac
        if ! minio_s3 GET "/$b?encryption=" 2>/dev/null | grep "<KMSMasterKeyID>$MINIO_KMS_KEY_ID<" >/dev/null; then
            code=$(minio_s3 PUT "/$b?encryption=" -o /dev/null -w '%{http_code}' \
                -H "Content-MD5: $md5" -H "x-amz-content-sha256: $sha" -H 'Content-Type: application/xml' \
                --data-binary "$body") || code=000
            [[ $code == 200 ]] || die "setting default encryption on $b failed (HTTP $code)"
        fi
    done
}

minio_start() {
    local home certs
    ensure_dirs
    [[ -s $CERTS/server.key ]] || die "no server certificate yet: start the certs component first"
    home=$(minio_home); certs="$home/certs"
    mkdir -p "$home/data" "$certs/CAs"
    chmod 700 "$home" "$certs"
    # MinIO reads public.crt, private.key and trusts CAs/* (re-read on change).
    cmp -s "$CERTS/server.crt" "$certs/public.crt" || install -m 0644 "$CERTS/server.crt" "$certs/public.crt"
    cmp -s "$CERTS/server.key" "$certs/private.key" || install -m 0600 "$CERTS/server.key" "$certs/private.key"
    cmp -s "$CERTS/ca.crt" "$certs/CAs/ca.crt" || install -m 0644 "$CERTS/ca.crt" "$certs/CAs/ca.crt"
    if ! pid_alive minio; then
        if tcp_open 127.0.0.1 "$MINIO_PORT"; then
            die "port $MINIO_PORT is taken by a process this stack did not start"
        fi
        local password kms
        password=$(ensure_secret minio_root_password)
        kms=$(minio_kms_key)
        (
            # Secrets travel in the environment, not on the command line.
            export MINIO_ROOT_USER MINIO_ROOT_PASSWORD="$password"
            export MINIO_KMS_SECRET_KEY="$MINIO_KMS_KEY_ID:$kms"
            export MINIO_SITE_REGION="$MINIO_REGION" MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off
            export MINIO_BROWSER_REDIRECT=off
            start_daemon minio "$(minio_bin)" server --anonymous \
                --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT" \
                --certs-dir "$certs" "$home/data"
        )
    fi
    wait_for 60 "MinIO on :$MINIO_PORT" tls_answers "localhost:$MINIO_PORT" localhost \
        || die "MinIO did not start; see $LOGS/minio.log"
    wait_for 30 "MinIO health" minio_live || die "MinIO is not healthy; see $LOGS/minio.log"
    minio_bootstrap
}

# True while PID runs and is not a zombie: an orphaned daemon's parent is PID 1,
# and until PID 1 reaps it (seconds, in some sandboxes) `kill -0` still succeeds.
minio_proc_running() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

# stop_daemon, but done as soon as MinIO has exited rather than once it is reaped.
minio_stop() {
    local pid deadline
    if pid_alive minio; then
        pid=$(cat "$RUN/minio.pid")
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + 15 ))
        while minio_proc_running "$pid" && (( $(date +%s) < deadline )); do sleep 0.1; done
        if minio_proc_running "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$RUN/minio.pid"
}

minio_status() {
    local xml names
    printf 'S3 https://localhost:%s' "$MINIO_PORT"
    minio_live || return 1
    xml=$(minio_s3 GET / -f 2>/dev/null) || return 1
    names=$(grep -o '<Name>[^<]*</Name>' <<<"$xml" | sed 's/<[^>]*>//g' | paste -sd, - | sed 's/,/, /g')
    printf ' buckets %s (SSE-KMS key %s)' "${names:-none}" "$MINIO_KMS_KEY_ID"
}

minio_env() {
    cat <<ENV
INDUTECH_S3__ENDPOINT_URL=https://localhost:$MINIO_PORT
INDUTECH_S3__REGION=$MINIO_REGION
INDUTECH_S3__ACCESS_KEY_ID=$MINIO_ROOT_USER
INDUTECH_S3__SECRET_ACCESS_KEY=$(ensure_secret minio_root_password)
INDUTECH_S3__SSE=aws:kms
INDUTECH_S3__KMS_KEY_ID=$MINIO_KMS_KEY_ID
INDUTECH_S3__CA_FILE=$CERTS/ca.crt
INDUTECH_S3__LAKE_BUCKET=$MINIO_LAKE_BUCKET
INDUTECH_S3__BACKUP_BUCKET=$MINIO_BACKUP_BUCKET
ENV
}
