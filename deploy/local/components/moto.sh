# moto's server, standing in for CloudWatch and CloudWatch Logs only (it does
# not evaluate alarms). Runs from the project's virtualenv over HTTPS.
# shellcheck shell=bash

MOTO_PORT=4566

moto_bin() { echo "$REPO_ROOT/.venv/bin/moto_server"; }

moto_install() {
    [[ -x $(moto_bin) ]] || die "moto_server is missing from .venv: run 'make setup' first"
}

moto_start() {
    if ! pid_alive moto; then
        start_daemon moto "$(moto_bin)" -H 127.0.0.1 -p "$MOTO_PORT" -c "$CERTS/server.crt" -k "$CERTS/server.key"
    fi
    wait_for 30 "moto (CloudWatch) on :$MOTO_PORT" tls_answers "localhost:$MOTO_PORT" localhost
}

moto_stop() { stop_daemon moto; }

moto_status() {
    printf 'CloudWatch + Logs https://localhost:%s' "$MOTO_PORT"
    tls_answers "localhost:$MOTO_PORT" localhost
}

moto_env() {
    cat <<ENV
INDUTECH_CLOUDWATCH__ENDPOINT_URL=https://localhost:$MOTO_PORT
INDUTECH_CLOUDWATCH__REGION=eu-west-1
INDUTECH_CLOUDWATCH__ACCESS_KEY_ID=local
INDUTECH_CLOUDWATCH__SECRET_ACCESS_KEY=local-moto-accepts-anything
INDUTECH_CLOUDWATCH__CA_FILE=$CERTS/ca.crt
ENV
}
