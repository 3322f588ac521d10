# Apache Kafka in KRaft mode (one combined broker + controller node), run from
# Maven Central jars on Java 17: the local stand-in for Redpanda. Clients use
# SASL_SSL with SCRAM-SHA-512 over TLS 1.3 on localhost:9093 with the stack's
# certificates; a loopback-only PLAINTEXT listener on 127.0.0.1:9092 serves
# the stack's own tooling (topic creation, readiness), never the workers.
#
# Pinned to 3.9.2 (KRaft): Debian 12's kcat (librdkafka 2.0.2, < 2.6.1) sends a
# SCRAM nonce that Kafka 4.x refuses, and kcat over SASL_SSL is the benchmark
# peer of every flow. aiokafka works with both; KAFKA_VERSION=4.4.0 runs 4.x
# (docs/architecture.md, "Kafka version").
# shellcheck shell=bash

KAFKA_VERSION=${KAFKA_VERSION:-3.9.2}
KAFKA_LOG4J_VERSION=2.25.5          # Kafka 4.x logs through slf4j 1.7 to this log4j2 (3.9.x: reload4j)
KAFKA_PORT=9093                     # SASL_SSL, advertised as localhost:9093
KAFKA_PLAINTEXT_PORT=9092           # PLAINTEXT, 127.0.0.1 only
KAFKA_CONTROLLER_PORT=9095          # KRaft controller, 127.0.0.1 only
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}

kafka_home() { echo "$STACK_CACHE/kafka-$KAFKA_VERSION"; }
kafka_dir()  { echo "$STACK_DIR/kafka"; }

# Kafka 4.x brings log4j2 but no slf4j binding: add log4j's slf4j 1.7 bridge.
# Kafka 3.9.x already brings its backend (slf4j-reload4j).
kafka_logging_dependency() {
    [[ ${KAFKA_VERSION%%.*} -ge 4 ]] || return 0
    echo "    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$KAFKA_LOG4J_VERSION</version></dependency>"
}

kafka_install() {
    apt_ensure openjdk-17-jdk-headless maven kcat openssl
    local home; home=$(kafka_home)
    local libs=$home/libs
    [[ -e $libs/.complete ]] && return 0
    mkdir -p "$home"
    if [[ ! -e $libs/.complete ]]; then
        log "resolving Apache Kafka $KAFKA_VERSION jars from Maven Central into $libs"
        cat > "$home/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.indutech.stack</groupId>
  <artifactId>kafka-libs</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- broker + controller (kafka.Kafka) and the storage tool (kafka.tools.StorageTool) -->
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- command-line tools; Kafka Connect's runtime is left out -->
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version>
      <exclusions><exclusion><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId></exclusion></exclusions>
    </dependency>
$(kafka_logging_dependency)
  </dependencies>
</project>
POM
        rm -rf "$libs.tmp"
        mvn -q -B -f "$home/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$libs.tmp" >"$home/mvn.log" 2>&1 \
            || die "resolving Kafka $KAFKA_VERSION with Maven failed; see $home/mvn.log"
        rm -rf "$libs"
        mv "$libs.tmp" "$libs"
        touch "$libs/.complete"
    fi
}

kafka_write_config() {
    local dir; dir=$(kafka_dir)
    mkdir -p "$dir/data" "$dir/tls"
    (
        umask 077
        # PEM keystore: the private key (PKCS#8, unencrypted) followed by the chain.
        cat "$CERTS/server.key" "$CERTS/server.crt" "$CERTS/ca.crt" > "$dir/tls/keystore.pem.tmp"
        mv "$dir/tls/keystore.pem.tmp" "$dir/tls/keystore.pem"
    )
    cat > "$dir/server.properties" <<PROPS
# Written by deploy/local/components/kafka.sh on every start; edit that file instead.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=SASL_SSL://127.0.0.1:$KAFKA_PORT,PLAINTEXT://127.0.0.1:$KAFKA_PLAINTEXT_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=SASL_SSL://localhost:$KAFKA_PORT,PLAINTEXT://127.0.0.1:$KAFKA_PLAINTEXT_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data

# SCRAM-SHA-512 over TLS 1.3 only (users are created when the storage is formatted)
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.protocol=TLSv1.3
ssl.enabled.protocols=TLSv1.3
ssl.keystore.type=PEM
ssl.keystore.location=$dir/tls/keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$CERTS/ca.crt
ssl.client.auth=none

# One node: internal topics with replication factor 1 and min ISR 1, or
# transactions and consumer groups hang.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
group.initial.rebalance.delay.ms=0
# Topics are made by "python -m indutech_common.topics create" (the contract's partitions,
# cleanup policy and retention), never by a client's first metadata request: an
# auto-created topic has one partition and the broker's defaults (Redpanda's default too).
auto.create.topics.enable=false

# ACLs enforced, as on Redpanda in compose and production: the stack's user and the
# loopback-only PLAINTEXT and controller listeners (ANONYMOUS) are superusers; the
# workers' own users get only the ACLs of deploy/compose/redpanda/init.sh (the Kafka
# ACL tests create them)
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:indutech;User:admin;User:ANONYMOUS

# A small machine (2 cores)
num.network.threads=2
num.io.threads=4
background.threads=4
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
log.retention.hours=168
PROPS
    cat > "$dir/log4j2.properties" <<'LOG'
# Broker logs go to stdout, which start_daemon appends to $LOGS/kafka.log.
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
LOG
    cat > "$dir/log4j2-tools.properties" <<'LOG'
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
LOG
    # The same for Kafka 3.9.x, which logs through reload4j (log4j 1.2).
    printf '%s\n' 'log4j.rootLogger=INFO, stdout' 'log4j.appender.stdout=org.apache.log4j.ConsoleAppender' \
        'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout' \
        'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n' \
        'log4j.logger.kafka.request.logger=WARN' 'log4j.logger.org.apache.kafka.clients=WARN' > "$dir/log4j.properties"
    printf '%s\n' 'log4j.rootLogger=WARN, stderr' 'log4j.appender.stderr=org.apache.log4j.ConsoleAppender' \
        'log4j.appender.stderr.Target=System.err' 'log4j.appender.stderr.layout=org.apache.log4j.PatternLayout' \
        'log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n' > "$dir/log4j-tools.properties"
    # For people: kcat -F .stack/kafka/kcat.conf -b localhost:9093 -L (SCRAM against
    # Kafka 4.x needs librdkafka >= 2.6.1; over PLAINTEXT: kcat -b 127.0.0.1:9092 -L).
    (
        umask 077
        cat > "$dir/kcat.conf" <<CONF
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=indutech
sasl.password=$(ensure_secret kafka_password)
ssl.ca.location=$CERTS/ca.crt
CONF
    )
}

# kafka_tool MAINCLASS ARGS...: a short-lived JVM on the Kafka classpath; output to the log.
kafka_tool() {
    local home dir; home=$(kafka_home); dir=$(kafka_dir)
    java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$dir/log4j2-tools.properties" -Dlog4j.configuration="file:$dir/log4j-tools.properties" \
        -cp "$home/libs/*" "$@" >>"$LOGS/kafka.log" 2>&1
}

# kafka_reformat_note DATA_DIR: what to tell before formatting DATA_DIR. Only storage
# that really was formatted (meta.properties) by another version is news; a new or
# half-made data folder is simply formatted, without a warning.
kafka_reformat_note() {
    [[ -s $1/meta.properties ]] || return 0
    echo "Kafka storage was formatted by $(cat "$1/.kafka-version" 2>/dev/null || echo "another version"); formatting anew for $KAFKA_VERSION (topics are recreated empty)"
}

# Format the storage once, with the SCRAM users; later starts reuse it.
kafka_format() {
    local dir; dir=$(kafka_dir)
    if [[ -s $dir/data/meta.properties && $(cat "$dir/data/.kafka-version" 2>/dev/null) == "$KAFKA_VERSION" ]]; then
        return 0
    fi
    local note; note=$(kafka_reformat_note "$dir/data")
    [[ -z $note ]] || warn "$note"
    log "formatting Kafka storage in $dir/data (SCRAM-SHA-512 users indutech, admin)"
    rm -rf "$dir/data"; mkdir -p "$dir/data"
    local cluster_id
    cluster_id=$(openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=\n')
    kafka_tool kafka.tools.StorageTool format --config "$dir/server.properties" --cluster-id "$cluster_id" \
        --add-scram "SCRAM-SHA-512=[name=indutech,password=$(ensure_secret kafka_password)]" \
        --add-scram "SCRAM-SHA-512=[name=admin,password=$(ensure_secret kafka_admin_password)]" \
        || { rm -rf "$dir/data"; die "formatting Kafka storage failed; see $LOGS/kafka.log"; }
    echo "$KAFKA_VERSION" > "$dir/data/.kafka-version"
}

# The broker is ready when it answers TLS on the SASL_SSL port and lists itself over
# PLAINTEXT (its SCRAM users are in the metadata it loaded before that, unless a SCRAM
# user was ever removed: Kafka 3.9.2 then drops them all at the next start, so nothing
# here removes one; tests/support/kafka_acls.py). No SCRAM
# login with kcat here: Debian 12's librdkafka 2.0.2 fails SCRAM against Kafka 4.x
# (a nonce bug fixed in librdkafka 2.6.1, which Kafka 4 no longer tolerates).
kafka_metadata() { timeout 10 kcat -b "127.0.0.1:$KAFKA_PLAINTEXT_PORT" -L -m 3 2>/dev/null; }
kafka_ready() { tls_answers "localhost:$KAFKA_PORT" localhost && kafka_metadata | grep '^ 1 brokers:' >/dev/null; }

kafka_wait_up() {
    local deadline=$(( $(date +%s) + 120 ))
    until kafka_ready; do
        if ! pid_alive kafka; then
            tail -n 20 "$LOGS/kafka.log" >&2
            die "Kafka exited during startup; see $LOGS/kafka.log"
        fi
        (( $(date +%s) < deadline )) || die "Kafka did not become ready within 120 s; see $LOGS/kafka.log"
        sleep 0.2
    done
}

# The topics of the contract (libs/common: indutech_common.schemas.topics), made and
# checked by the same command as in compose and Kubernetes, over the loopback
# PLAINTEXT listener, with one replica (one broker). Existing topics are checked:
# a mis-configured one stops the stack with the command's report.
kafka_ensure_topics() {
    local python=$REPO_ROOT/.venv/bin/python report variable unset=()
    [[ -x $python ]] || die "no Python virtualenv in $REPO_ROOT/.venv: run 'make setup' first (Kafka's topics are created by python -m indutech_common.topics)"
    # Only these settings: a developer's INDUTECH_* variables must not redirect it.
    for variable in $(compgen -e); do
        if [[ $variable == INDUTECH_* ]]; then unset+=(-u "$variable"); fi
    done
    if ! report=$(
        env "${unset[@]}" \
            INDUTECH_TOPICS_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PLAINTEXT_PORT" \
            INDUTECH_TOPICS_KAFKA__SECURITY_PROTOCOL=PLAINTEXT \
            INDUTECH_TOPICS_ENVIRONMENT=local \
            "$python" -m indutech_common.topics create 2>>"$LOGS/kafka.log"
    ); then
        printf '%s\n' "$report" >&2
        die "Kafka topics are missing or mis-configured (above; the fix is in $LOGS/kafka.log)"
    fi
    printf '%s\n' "$report" >>"$LOGS/kafka.log"
    log "Kafka topics: $(grep -c '^ok' <<< "$report") of the contract present (python -m indutech_common.topics list)"
}

kafka_start() {
    ensure_dirs
    if ! pid_alive kafka; then
        local p
        for p in "$KAFKA_PORT" "$KAFKA_PLAINTEXT_PORT" "$KAFKA_CONTROLLER_PORT"; do
            ! tcp_open 127.0.0.1 "$p" || die "port $p is taken by another process; stop it first (Kafka needs 9092, 9093, 9095)"
        done
        [[ -s $CERTS/server.crt ]] || die "no stack certificates: run 'deploy/local/stack up certs kafka'"
        kafka_write_config
        kafka_format
        log "starting Kafka $KAFKA_VERSION (KRaft) on localhost:$KAFKA_PORT"
        local dir home; dir=$(kafka_dir); home=$(kafka_home)
        # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS holds several options
        start_daemon kafka java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
            -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
            -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dlog4j.configuration="file:$dir/log4j.properties" \
            -Dkafka.logs.dir="$LOGS" \
            -cp "$home/libs/*" kafka.Kafka "$dir/server.properties"
    fi
    kafka_wait_up
    kafka_ensure_topics
}

kafka_stop() { stop_daemon kafka 30; }

kafka_status() {
    printf 'SASL_SSL localhost:%s (SCRAM-SHA-512, TLS 1.3), PLAINTEXT 127.0.0.1:%s' "$KAFKA_PORT" "$KAFKA_PLAINTEXT_PORT"
    kafka_ready
}

kafka_env() {
    cat <<ENV
INDUTECH_KAFKA__BOOTSTRAP_SERVERS=localhost:$KAFKA_PORT
INDUTECH_KAFKA__SECURITY_PROTOCOL=SASL_SSL
INDUTECH_KAFKA__SASL_MECHANISM=SCRAM-SHA-512
INDUTECH_KAFKA__USERNAME=indutech
INDUTECH_KAFKA__PASSWORD=$(ensure_secret kafka_password)
INDUTECH_KAFKA__TLS__CA_FILE=$CERTS/ca.crt
INDUTECH_KAFKA_PLAINTEXT_BOOTSTRAP=127.0.0.1:$KAFKA_PLAINTEXT_PORT
ENV
}
