#!/usr/bin/env bash
# `make demo`: the local stack, then each flow's worker with generated data.
# Workers join this script as their issues land (see the README's status table);
# until then it tours the foundation with generated records through every part.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO_ROOT"
echo "== local stack"
deploy/local/stack status
echo
echo "== foundation tour: generated records through Kafka, S3, PostgreSQL and both directories"
PYTHONPATH="$REPO_ROOT" .venv/bin/python deploy/local/tour.py "$@"
echo
echo "No flow worker is built yet: each flow's issue adds its worker here."
echo "Stop the stack with: make stack-down"
