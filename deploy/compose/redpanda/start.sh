#!/usr/bin/env bash
# Redpanda's entrypoint in compose: the node config and cluster bootstrap from
# this folder, the superuser from a compose secret, then the broker in the
# foreground. RP_BOOTSTRAP_USER creates the superuser before the first
# listener opens, so SASL is on from the first second (no restart to enable it).
set -euo pipefail
install -m 0644 /compose/redpanda/redpanda.yaml /etc/redpanda/redpanda.yaml
install -m 0644 /compose/redpanda/bootstrap.yaml /etc/redpanda/.bootstrap.yaml
# Read here, not in compose's environment: the password never shows in `docker inspect`.
RP_BOOTSTRAP_USER="admin:$(cat /run/secrets/redpanda_admin_password):SCRAM-SHA-512"
export RP_BOOTSTRAP_USER
exec /usr/bin/rpk redpanda start --config /etc/redpanda/redpanda.yaml
