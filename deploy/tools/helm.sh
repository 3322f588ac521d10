#!/usr/bin/env bash
# Helm 4, built from source with `go install` like MinIO (no helm binary is
# packaged for Debian, and nothing but the package registries is reachable).
# Prints the path of the binary. Cached in $INDUTECH_TOOLS_CACHE (default
# ~/.cache/indutech-stack/bin): the first build takes a few minutes on 2 cores,
# every later call returns at once. Idempotent; a binary of another version in the
# cache is rebuilt.
#
#   deploy/tools/helm.sh            # build if missing, print the path
#   "$(deploy/tools/helm.sh)" version
set -euo pipefail

HELM_MODULE=helm.sh/helm/v4
HELM_VERSION=v4.3.2
cache="${INDUTECH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/indutech-stack/bin}"
bin="$cache/helm-$HELM_VERSION"

say() { printf '\033[1m[helm]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[helm] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [[ -x $bin ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null ||
    die "Helm is built with 'go install' and no Go toolchain is on PATH (Go >= 1.26, which Helm v4.3.2 needs, from https://go.dev/dl)"
mkdir -p "$cache"
build="$(mktemp -d "$cache/.helm-build.XXXXXX")"
trap 'rm -rf "$build"' EXIT
buildlog="$build/build.log"
start=$SECONDS
say "building Helm $HELM_VERSION with go install (a few minutes on 2 cores, once; cached in $cache)"
if ! (cd /tmp && GOBIN="$build" CGO_ENABLED=0 go install "$HELM_MODULE/cmd/helm@$HELM_VERSION") \
    >"$buildlog" 2>&1; then
    tail -n 30 "$buildlog" >&2
    die "the Helm build failed (output above); check that the Go module proxy answers (go env GOPROXY)"
fi
# The module version go install resolved (helm's own `version` prints only major.minor
# when built without the release's -ldflags).
built=$(go version -m "$build/helm" | awk '$1 == "mod" && $2 == "'"$HELM_MODULE"'" {print $3}')
[[ $built == "$HELM_VERSION" ]] || die "go install built Helm '$built', expected $HELM_VERSION"
mv -f "$build/helm" "$bin"
say "Helm $HELM_VERSION built in $(( SECONDS - start ))s: $bin"
echo "$bin"
