# Shared helpers of the native local stack. Sourced by deploy/local/stack and by
# every deploy/local/components/*.sh; defines functions only, runs nothing.
# shellcheck shell=bash

: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${STACK_DIR:=$REPO_ROOT/.stack}"
: "${STACK_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}/indutech-stack}"
CERTS="$STACK_DIR/certs"
SECRETS="$STACK_DIR/secrets"
LOGS="$STACK_DIR/logs"
RUN="$STACK_DIR/run"

# Loopback addresses: everything on 127.0.0.1 except the two AD domain
# controllers, which both need port 636 and so take an address each.
CORP_DC_IP=127.0.0.2
AWS_DC_IP=127.0.0.3

log()  { printf '\033[1m[stack]\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[33m[stack] warning:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[31m[stack] error:\033[0m %s\n' "$*" >&2; exit 1; }

ensure_dirs() { mkdir -p "$CERTS" "$SECRETS" "$LOGS" "$RUN" "$STACK_CACHE"; chmod 700 "$SECRETS"; }

# ensure_secret NAME: a random password stored once in $SECRETS/NAME (0600) and
# printed; the same value on every later call so restarts keep working.
ensure_secret() {
    local file="$SECRETS/$1"
    if [[ ! -s $file ]]; then
        (umask 077; openssl rand -hex 16 | tr -d '\n' > "$file")
    fi
    cat "$file"
}

# wait_for TIMEOUT_S DESCRIPTION CMD...: retry CMD every 0.2 s until it succeeds.
wait_for() {
    local timeout=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + timeout ))
    until "$@" >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            warn "$what did not answer within ${timeout}s"
            return 1
        fi
        sleep 0.2
    done
}

# alive_pid PID: running and not a zombie (PID 1 here can be slow to reap).
alive_pid() { kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }
pid_alive() { local f="$RUN/$1.pid"; [[ -s $f ]] && alive_pid "$(cat "$f")"; }

# start_daemon NAME CMD...: run CMD detached in its own session, log to
# $LOGS/NAME.log, remember its pid. No-op when already running.
start_daemon() {
    local name=$1; shift
    if pid_alive "$name"; then return 0; fi
    setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN/$name.pid"
}

# stop_daemon NAME [TIMEOUT_S]: SIGTERM the process group, SIGKILL after the timeout.
stop_daemon() {
    local name=$1 timeout=${2:-15} pid
    [[ -s $RUN/$name.pid ]] || return 0
    pid=$(cat "$RUN/$name.pid")
    if alive_pid "$pid"; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        local deadline=$(( $(date +%s) + timeout ))
        while alive_pid "$pid" && (( $(date +%s) < deadline )); do sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
}

# tcp_open HOST PORT: true when something accepts TCP connections there.
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }

# tls_answers HOST:PORT [SERVERNAME]: true when a TLS handshake verifies against our CA.
tls_answers() {
    local name=${2:-${1%%:*}} check=(-verify_hostname)
    # openssl matches IP addresses only with -verify_ip (and sends no SNI for them).
    [[ $name =~ ^[0-9.]+$ ]] && check=(-verify_ip)
    timeout 5 openssl s_client -connect "$1" -CAfile "$CERTS/ca.crt" \
        -verify_return_error "${check[@]}" "$name" </dev/null >/dev/null 2>&1
}

# apt_ensure PKG...: install the Debian packages that are missing, quietly.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
    done
    (( ${#missing[@]} )) || return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""; (( EUID == 0 )) || sudo=sudo
    local stamp=/var/lib/apt/periodic/indutech-update-stamp
    if [[ ! -e $stamp ]] || [[ -n $(find "$stamp" -mmin +720 2>/dev/null) ]]; then
        $sudo apt-get update -qq && $sudo mkdir -p "$(dirname "$stamp")" && $sudo touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed; run it by hand to see why"
}

# write_env: $STACK_DIR/stack.env, the settings that point every worker at this
# stack, gathered from each component's NAME_env. Mode 0600: it holds the
# stack's generated passwords (local throwaway secrets, never production ones).
write_env() {
    local out="$STACK_DIR/stack.env" c
    (
        umask 077
        {
            echo "# Written by deploy/local/stack; source it (set -a; . $out) to point workers at the local stack."
            echo "INDUTECH_STACK_DIR=$STACK_DIR"
            for c in "${COMPONENTS[@]}"; do
                if declare -F "${c}_env" >/dev/null; then "${c}_env"; fi
            done | while IFS='=' read -r key value; do
                # Single-quoted so that both `. stack.env` and dotenv readers take spaces.
                printf "%s='%s'\n" "$key" "${value//\'/}"
            done
        } > "$out.tmp"
        mv "$out.tmp" "$out"
    )
    echo "$out"
}
