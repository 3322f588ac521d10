#!/usr/bin/env bash
# compose's `kafka-init`: one SCRAM-SHA-512 user per worker, each with only the
# ACLs its flow needs (the superuser `admin` exists from the broker's first start).
# Idempotent: an existing user gets its password from the secret again, and
# creating an ACL that exists changes nothing. rpk takes a new user's password as
# an argument: visible to `ps` inside this short-lived container only. Topic names are the contract's
# (libs/common/src/indutech_common/schemas/topics.py).
set -euo pipefail
RPK=/compose/redpanda/rpk.sh

SENSOR=iot.sensor-readings.v1
TICKETS=iot.client-tickets.v1
DEAD=iot.dead-letter.v1
CHECKPOINTS=iot.ingest-checkpoints.v1
WORK=sql.backup-work.v1
COMPLETED=sql.backup-completed.v1
CHANGES=identity.changes.v1

# The workers that get a user; tests/unit/deploy/test_compose.py checks that each
# worker in compose.yaml with a Kafka block has one (and its password secret).
USERS=(iot-ingest iot-to-s3 iot-aggregator sql-backup sql-to-redshift identity-sync metrics-shipper)

ensure_user() {
    local user=$1 password
    password=$(cat "/run/secrets/kafka_${user//-/_}_password")
    if "$RPK" security user list 2>/dev/null | grep -qx "$user"; then
        "$RPK" security user update "$user" --mechanism SCRAM-SHA-512 --new-password "$password" >/dev/null
    else
        "$RPK" security user create "$user" --mechanism SCRAM-SHA-512 --password "$password" >/dev/null
    fi
    echo "user $user"
}

# allow USER OPERATIONS RESOURCE-FLAGS...
allow() {
    local user=$1 operations=$2; shift 2
    "$RPK" security acl create --allow-principal "User:$user" --operation "$operations" "$@" >/dev/null
}

"$RPK" cluster info >/dev/null   # fails fast, with rpk's reason, when the broker refuses
for user in "${USERS[@]}"; do ensure_user "$user"; done

# The topic check every worker runs at start reads the topics' configs: describe_configs.
# A producer (idempotent, acks=all) needs idempotent_write on the cluster.
for user in "${USERS[@]}"; do
    [[ $user == metrics-shipper ]] || allow "$user" idempotent_write --cluster
done

# 1 iot-ingest: records, dead letters and checkpoints in one transaction.
allow iot-ingest write,describe,describe_configs --topic "$SENSOR" --topic "$TICKETS" --topic "$DEAD"
allow iot-ingest read,write,describe,describe_configs --topic "$CHECKPOINTS"
allow iot-ingest write,describe --transactional-id iot-ingest --resource-pattern-type prefixed

# 2 iot-to-s3: consumer group iot-to-s3; one transactional id per partition (group.topic.partition).
allow iot-to-s3 read,describe,describe_configs --topic "$SENSOR" --topic "$TICKETS"
allow iot-to-s3 write,describe,describe_configs --topic "$DEAD"
allow iot-to-s3 read,describe --group iot-to-s3
allow iot-to-s3 write,describe --transactional-id iot-to-s3. --resource-pattern-type prefixed

# 3 iot-aggregator: its group; `rebuild` reads iot-to-s3's committed offsets.
allow iot-aggregator read,describe,describe_configs --topic "$SENSOR" --topic "$TICKETS"
allow iot-aggregator write,describe,describe_configs --topic "$DEAD"
allow iot-aggregator read,describe --group iot-aggregator
allow iot-aggregator describe --group iot-to-s3

# 4 sql-backup: plans and consumes the work topic, announces completed backups.
allow sql-backup read,write,describe,describe_configs --topic "$WORK" --topic "$COMPLETED"
allow sql-backup write,describe,describe_configs --topic "$DEAD"
allow sql-backup read,describe --group sql-backup --resource-pattern-type prefixed

# 5 sql-to-redshift: its group on the completed-backup announcements.
allow sql-to-redshift read,describe,describe_configs --topic "$COMPLETED"
allow sql-to-redshift read,describe --group sql-to-redshift

# 6 identity-sync: the optional audit feed only.
allow identity-sync write,describe,describe_configs --topic "$CHANGES"

# 7 metrics-shipper: consumer lag of every group (list groups, their offsets, the ends).
allow metrics-shipper describe --topic '*'
allow metrics-shipper describe --group '*'
allow metrics-shipper describe --cluster

"$RPK" security acl list
