# InduTech Flows: one task runner. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := python3 -m uv
endif
PY_DIRS := libs tests bench deploy/local/tour.py deploy/local/demo_flows.py deploy/local/demo_sql.py deploy/compose/grafana/dashboard.py $(wildcard services/*/src)
PYTEST_ARGS ?=
# Integration tests mostly wait (on Kafka, S3, Samba, timers): they run in parallel
# processes, a test file per process. Tests that stop a shared service (`serial`) and
# the `last` ones run afterwards, one at a time.
PYTEST_WORKERS ?= 4
STACK := deploy/local/stack

.PHONY: help setup tools helm k8s chart-check stack-up stack-down stack-status stack-reset test test-quick test-unit demo lint lock-check mypy compose-lint compose-dashboard format bench clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-13s\033[0m %s\n", $$1, $$2}'

setup: ## create .venv with every package (libs/common, services, dev tools); idempotent
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	@$(UV) sync --frozen --quiet
	@echo "venv ready: .venv ($$(.venv/bin/python --version))"

tools: helm ## build the chart tools once (cached): Helm and kustomize-build
	@echo "kustomize-build: $$(deploy/tools/kustomize.sh)"

helm: ## build Helm (go install helm.sh/helm/v4, once; cached like MinIO) and print its path
	@echo "helm: $$(deploy/tools/helm.sh)"

k8s: setup tools ## render deploy/k8s from the Helm chart (values-local.yaml) and compose's MinIO policies from deploy/iam
	@.venv/bin/python -m indutech_devtools.k8s render

chart-check: setup tools ## helm lint + template per values file, Kubernetes schemas, deploy/k8s current (kustomize), IAM lint
	@.venv/bin/python -m indutech_devtools.k8s check

stack-up: setup ## install (first time) and start the native local stack; idempotent
	@$(STACK) up
	@$(STACK) status

stack-down: ## stop the local stack (data stays in .stack/)
	@$(STACK) down

stack-status: ## each service, its address and whether it answers
	@$(STACK) status

stack-reset: ## stop the stack and delete .stack/ (certificates, data, secrets)
	@$(STACK) reset

test: stack-up tools ## THE test command: start the stack, run every test (unit + integration)
	@rc=0; \
	.venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not serial and not last" $(PYTEST_ARGS) || rc=$$?; \
	echo "== tests that stop a shared service, and the last ones, one at a time"; \
	.venv/bin/pytest -m "serial or last" $(PYTEST_ARGS) || { r=$$?; [[ $$r == 5 ]] || rc=$$r; }; \
	exit $$rc

test-quick: stack-up tools ## every test except the `last` ones (the 5,000-member group); same phases as test
	@rc=0; \
	.venv/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not serial and not last" $(PYTEST_ARGS) || rc=$$?; \
	.venv/bin/pytest -m "serial" $(PYTEST_ARGS) || { r=$$?; [[ $$r == 5 ]] || rc=$$r; }; \
	exit $$rc

test-unit: setup tools ## only the tests that need no running service
	@.venv/bin/pytest tests/unit $(PYTEST_ARGS)

demo: stack-up ## THE demo command: start the stack and the workers with generated data
	@bash deploy/local/demo.sh

lint: setup lock-check ## ruff (with bandit rules), mypy strict, a lock file that matches pyproject, chart-check, compose-lint
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@$(MAKE) --no-print-directory mypy
	@$(MAKE) --no-print-directory chart-check
	@$(MAKE) --no-print-directory compose-lint

# Offline: no Docker engine runs here, so the compose stack and the image are checked, never started.
COMPOSE_TESTS := tests/unit/deploy/test_compose.py tests/unit/deploy/test_compose_dashboards.py tests/unit/deploy/test_containers_provider.py tests/unit/deploy/test_dockerfile.py
compose-lint: ## compose.yaml against the compose spec's JSON schema, hadolint on every Dockerfile, the compose wiring tests
	@.venv/bin/check-jsonschema --schemafile deploy/compose/schema/compose-spec.json deploy/compose/compose.yaml
	@git ls-files --cached --others --exclude-standard -- '*Dockerfile' '*.Dockerfile' | xargs -r .venv/bin/hadolint --no-color
	@.venv/bin/pytest -q -n 0 $(COMPOSE_TESTS)

compose-dashboard: ## regenerate the Grafana dashboard of the seven flows (deploy/compose/grafana)
	@.venv/bin/python deploy/compose/grafana/dashboard.py > deploy/compose/grafana/dashboards/indutech-flows.json

lock-check: ## uv.lock matches pyproject.toml
	@$(UV) lock --check --quiet || { echo "uv.lock is stale: run uv lock"; exit 1; }

mypy: ## mypy --strict over libs, services, tests, bench and the demo scripts
	@.venv/bin/mypy $(PY_DIRS)

format: setup ## apply ruff's fixes and formatting
	@.venv/bin/ruff check --fix .
	@.venv/bin/ruff format .

bench: stack-up ## run the benchmarks; writes docs/benchmarks.md and bench/results.json
	@.venv/bin/python -m bench

clean: ## remove caches (not the stack)
	@rm -rf .mypy_cache .ruff_cache .pytest_cache bench/.work
