# PostgreSQL from Debian, standing in for two production systems: the `erp`
# database plays SQL Server (reached through unixODBC + psqlODBC, the same
# driver-manager path the ERP flows use) and `warehouse` plays Redshift (asyncpg,
# schemas rt, erp_raw, erp). TCP on 127.0.0.1 only, TLS 1.3 only, SCRAM only;
# the unix socket (peer auth) is for bootstrapping.
# shellcheck shell=bash

PG_PORT=${INDUTECH_STACK_PG_PORT:-5432}
PG_ROLE=indutech
PG_DATABASES=(erp warehouse)
PG_WAREHOUSE_SCHEMAS=(rt erp_raw erp)
PG_ODBC_DRIVER="PostgreSQL Unicode"

# The data lives in $STACK_DIR/postgres, unless the postgres user cannot traverse
# the path to it (a clone under /root, mode 0700): then in /var/lib/indutech-stack,
# reached through a symlink at $STACK_DIR/postgres, so `stack reset` still finds it.
pg_home() {
    local link="$STACK_DIR/postgres"
    if [[ -L $link ]]; then readlink -f "$link"; return 0; fi
    if [[ -d $link ]] || (( EUID != 0 )) || runuser -u postgres -- test -x "$STACK_DIR" 2>/dev/null; then
        echo "$link"; return 0
    fi
    local outside
    outside="/var/lib/indutech-stack/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)/postgres"
    mkdir -p "$outside" && ln -sfn "$outside" "$link"
    echo "$outside"
}
pg_data() { echo "$(pg_home)/data"; }

# The unix socket lives with the data unless that path is too long for a socket.
pg_sockdir() {
    local d; d="$(pg_home)/run"
    if (( ${#d} > 90 )); then d="/tmp/indutech-pg-$(id -u)"; fi
    echo "$d"
}

# Postgres refuses to run as root: as root we use the `postgres` system user,
# otherwise the invoking user.
pg_os_user() { if (( EUID == 0 )); then echo postgres; else id -un; fi; }
pg_as() {
    if (( EUID == 0 )); then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# The binaries of the cluster's major version, or of the newest one installed.
pg_bindir() {
    local ver d
    if [[ -s $(pg_data)/PG_VERSION ]]; then
        ver=$(cat "$(pg_data)/PG_VERSION")
        d=/usr/lib/postgresql/$ver/bin
        [[ -x $d/postgres ]] || die "the cluster in $(pg_data) is PostgreSQL $ver, but $d/postgres is missing (apt-get install postgresql-$ver, or 'deploy/local/stack reset')"
        echo "$d"; return 0
    fi
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/postgres ]] || die "no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)"
    echo "$d"
}

pg_register_odbc() {
    odbcinst -q -d -n "$PG_ODBC_DRIVER" >/dev/null 2>&1 && return 0
    local so tmpl sudo=""
    so=$(find /usr/lib /usr/local/lib -name psqlodbcw.so 2>/dev/null | head -n 1)
    [[ -n $so ]] || die "psqlodbcw.so not found (Debian package odbc-postgresql)"
    log "registering the ODBC driver '$PG_ODBC_DRIVER' ($so) with unixODBC"
    tmpl=$(mktemp)
    printf '[%s]\nDescription=PostgreSQL ODBC driver (Unicode version)\nDriver=%s\n' "$PG_ODBC_DRIVER" "$so" > "$tmpl"
    (( EUID == 0 )) || sudo=sudo
    $sudo odbcinst -i -d -f "$tmpl" >/dev/null || { rm -f "$tmpl"; die "odbcinst could not register $PG_ODBC_DRIVER"; }
    rm -f "$tmpl"
}

postgres_install() {
    apt_ensure postgresql odbc-postgresql unixodbc unixodbc-dev
    pg_register_odbc
}

# The postmaster pid from the data folder, when that process is alive.
pg_postmaster_pid() {
    local f pid
    f="$(pg_data)/postmaster.pid"
    [[ -s $f ]] || return 1
    pid=$(head -n 1 "$f")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Take over a postmaster that runs on our data folder but lost its pid file.
pg_adopt() {
    local pid
    pid_alive postgres && return 0
    pid=$(pg_postmaster_pid) || return 1
    echo "$pid" > "$RUN/postgres.pid"
}

# pg_install_file SRC DEST MODE: copy when the content differs; true if copied.
pg_install_file() {
    local src=$1 dest=$2 mode=$3
    if [[ -f $dest ]] && cmp -s "$src" "$dest"; then return 1; fi
    install -m "$mode" -o "$(pg_os_user)" -g "$(id -gn "$(pg_os_user)")" "$src" "$dest.tmp" && mv -f "$dest.tmp" "$dest" \
        || die "could not copy $src to $dest"
}

pg_write_file() {   # pg_write_file DEST < content; true if it changed
    local dest=$1 tmp
    tmp=$(mktemp)
    cat > "$tmp"
    if [[ -f $dest ]] && cmp -s "$tmp" "$dest"; then rm -f "$tmp"; return 1; fi
    install -m 0600 -o "$(pg_os_user)" -g "$(id -gn "$(pg_os_user)")" "$tmp" "$dest.tmp" && mv -f "$dest.tmp" "$dest" \
        || die "could not write $dest"
    rm -f "$tmp"
}

pg_configure() {
    local data changed=1
    data=$(pg_data)
    # Postgres refuses a key that others can read, or that it does not own.
    pg_install_file "$CERTS/server.key" "$data/server.key" 0600 && changed=0
    pg_install_file "$CERTS/server.crt" "$data/server.crt" 0644 && changed=0
    pg_install_file "$CERTS/ca.crt" "$data/ca.crt" 0644 && changed=0
    pg_write_file "$data/postgresql.conf" <<CONF && changed=0
# Written by deploy/local/components/postgres.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$(pg_sockdir)'
unix_socket_permissions = 0700
max_connections = 100
password_encryption = scram-sha-256

ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_ca_file = 'ca.crt'
ssl_min_protocol_version = 'TLSv1.3'

# A 2-core test machine: modest memory, little parallelism. fsync stays on;
# synchronous_commit off only risks the last few commits on a crash.
shared_buffers = 128MB
effective_cache_size = 1GB
work_mem = 16MB
maintenance_work_mem = 128MB
wal_buffers = 8MB
max_wal_size = 1GB
min_wal_size = 80MB
checkpoint_timeout = 15min
synchronous_commit = off
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_parallel_maintenance_workers = 1
random_page_cost = 1.1

logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = 2000
log_timezone = 'UTC'
timezone = 'UTC'
datestyle = 'iso, mdy'
lc_messages = 'C.UTF-8'
lc_monetary = 'C.UTF-8'
lc_numeric = 'C.UTF-8'
lc_time = 'C.UTF-8'
default_text_search_config = 'pg_catalog.english'
CONF
    pg_write_file "$data/pg_hba.conf" <<HBA && changed=0
# Written by deploy/local/components/postgres.sh on every start; edits are lost.
# TYPE   DATABASE  USER  ADDRESS        METHOD
local    all       all                  peer
hostssl  all       all   127.0.0.1/32   scram-sha-256
hostssl  all       all   ::1/128        scram-sha-256
HBA
    # A running server picks up new certificates and hba rules on SIGHUP.
    if (( changed == 0 )) && pid_alive postgres; then
        log "PostgreSQL configuration changed: reloading"
        kill -HUP "$(cat "$RUN/postgres.pid")"
    fi
    return 0
}

pg_init() {
    local data bin
    data=$(pg_data)
    [[ -s $data/PG_VERSION ]] && return 0
    bin=$(pg_bindir)
    log "initialising a PostgreSQL $(basename "$(dirname "$bin")") cluster in $data"
    mkdir -p "$data"
    chown "$(pg_os_user)": "$(pg_home)" "$data"
    chmod 0700 "$data"
    pg_as "$bin/initdb" -D "$data" -E UTF8 --locale=C.UTF-8 -U "$(pg_os_user)" \
        --auth-local=peer --auth-host=scram-sha-256 >>"$LOGS/postgres.log" 2>&1 \
        || die "initdb failed; see $LOGS/postgres.log"
}

pg_ready() { pg_as "$(pg_bindir)/pg_isready" -q -h "$(pg_sockdir)" -p "$PG_PORT"; }

# psql as the cluster's superuser over the unix socket (peer authentication).
pg_super_psql() {
    pg_as "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$(pg_sockdir)" -p "$PG_PORT" -U "$(pg_os_user)" "$@"
}

# Role, databases and warehouse schemas; every statement is idempotent and the
# whole thing is two psql calls, so a warm start pays ~0.1 s for it.
pg_bootstrap() {
    local pw dbs schemas s
    pw=$(ensure_secret pg_password)
    dbs=$(printf "'%s'," "${PG_DATABASES[@]}"); dbs=${dbs%,}
    # The password reaches psql on stdin, never on a command line.
    pg_super_psql -d postgres >/dev/null <<SQL || die "PostgreSQL bootstrap (role, databases) failed"
\\set pw '$pw'
SELECT 'CREATE ROLE $PG_ROLE' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE')
\\gexec
ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER $PG_ROLE', d) FROM unnest(ARRAY[$dbs]) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)
\\gexec
SQL
    schemas=""
    for s in "${PG_WAREHOUSE_SCHEMAS[@]}"; do schemas+="CREATE SCHEMA IF NOT EXISTS $s AUTHORIZATION $PG_ROLE;"$'\n'; done
    pg_super_psql -d warehouse >/dev/null <<SQL || die "PostgreSQL bootstrap (warehouse schemas) failed"
SET client_min_messages = warning;
$schemas
SQL
}

postgres_start() {
    local bin data
    ensure_dirs
    data=$(pg_data)
    [[ -s $CERTS/server.key ]] || die "no server certificate yet: start the certs component first"
    bin=$(pg_bindir)
    mkdir -p "$(pg_home)" "$(pg_sockdir)"
    chown "$(pg_os_user)": "$(pg_home)" "$(pg_sockdir)"
    chmod 0700 "$(pg_sockdir)"
    pg_as test -x "$(pg_home)" || die "user $(pg_os_user) cannot reach $(pg_home); put STACK_DIR on a path it can traverse"
    pg_init
    pg_adopt || true
    pg_configure
    if ! pid_alive postgres; then
        if tcp_open 127.0.0.1 "$PG_PORT"; then
            die "port $PG_PORT is taken by another server (Debian's own cluster? 'pg_lsclusters', then 'pg_ctlcluster <ver> main stop'), or set INDUTECH_STACK_PG_PORT"
        fi
        if (( EUID == 0 )); then
            # setpriv execs (runuser would fork), so the recorded pid is the postmaster's.
            start_daemon postgres setpriv --reuid=postgres --regid=postgres --init-groups -- \
                "$bin/postgres" -D "$data"
        else
            start_daemon postgres "$bin/postgres" -D "$data"
        fi
    fi
    wait_for 60 "PostgreSQL on :$PG_PORT" pg_ready || die "PostgreSQL did not start; see $LOGS/postgres.log"
    pg_bootstrap
}

# True while PID runs and is not a zombie: an orphaned daemon's parent is PID 1,
# and until PID 1 reaps it (seconds, in some sandboxes) `kill -0` still succeeds.
pg_proc_running() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $st && $st != Z* ]]
}

postgres_stop() {
    local pid deadline
    pg_adopt || true
    if pid_alive postgres; then
        # SIGINT is the fast shutdown (disconnects clients); stop_daemon's SIGTERM
        # would be the smart one, which waits for every client to leave.
        pid=$(cat "$RUN/postgres.pid")
        kill -INT "$pid" 2>/dev/null || true
        deadline=$(( $(date +%s) + 30 ))
        while pg_proc_running "$pid" && (( $(date +%s) < deadline )); do sleep 0.1; done
        pg_proc_running "$pid" || { rm -f "$RUN/postgres.pid"; return 0; }
    fi
    stop_daemon postgres
}

postgres_status() {
    local pw row
    printf 'postgresql://localhost:%s' "$PG_PORT"
    pw=$(cat "$SECRETS/pg_password" 2>/dev/null) || return 1
    [[ -x $(pg_bindir 2>/dev/null)/psql ]] || return 1
    row=$(PGPASSWORD=$pw PGCONNECT_TIMEOUT=5 "$(pg_bindir)/psql" -X -A -t -q \
        "host=localhost port=$PG_PORT dbname=warehouse user=$PG_ROLE sslmode=verify-full sslrootcert=$CERTS/ca.crt" \
        -c "SELECT (SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid())
                   || '|' || (SELECT string_agg(datname, ', ' ORDER BY datname) FROM pg_database
                              WHERE datname = ANY (ARRAY['erp', 'warehouse']))" 2>/dev/null) || return 1
    [[ -n $row ]] || return 1
    printf ' (%s, verify-full) databases %s' "$(sed 's/^TLSv/TLS /' <<<"${row%%|*}")" "${row#*|}"
}

postgres_env() {
    local pw
    pw=$(ensure_secret pg_password)
    cat <<ENV
INDUTECH_WAREHOUSE__HOST=localhost
INDUTECH_WAREHOUSE__PORT=$PG_PORT
INDUTECH_WAREHOUSE__DATABASE=warehouse
INDUTECH_WAREHOUSE__USER=$PG_ROLE
INDUTECH_WAREHOUSE__PASSWORD=$pw
INDUTECH_WAREHOUSE__SSLMODE=verify-full
INDUTECH_WAREHOUSE__CA_FILE=$CERTS/ca.crt
INDUTECH_WAREHOUSE__DIALECT=postgres
INDUTECH_ERP__DIALECT=postgres
INDUTECH_ERP__ODBC_DRIVER=$PG_ODBC_DRIVER
INDUTECH_ERP__HOST=localhost
INDUTECH_ERP__PORT=$PG_PORT
INDUTECH_ERP__DATABASE=erp
INDUTECH_ERP__USER=$PG_ROLE
INDUTECH_ERP__PASSWORD=$pw
INDUTECH_ERP__CA_FILE=$CERTS/ca.crt
ENV
}
