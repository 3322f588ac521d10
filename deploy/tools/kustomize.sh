#!/usr/bin/env bash
# `kustomize build` for machines without kubectl or kustomize: deploy/tools/kustomize
# (a few lines over the kustomize API that `kubectl apply -k` uses, pinned in its go.mod)
# built with `go build`, cached by the hash of its sources. Prints the binary's path.
#
#   "$(deploy/tools/kustomize.sh)" deploy/k8s     # the objects kubectl apply -k would send
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/kustomize" && pwd)"
cache="${INDUTECH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/indutech-stack/bin}"
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
bin="$cache/kustomize-build-$hash"

say() { printf '\033[1m[kustomize]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[kustomize] error:\033[0m %s\n' "$*" >&2; exit 1; }

if [[ -x $bin ]]; then
    echo "$bin"
    exit 0
fi
command -v go >/dev/null ||
    die "kustomize-build is built with Go and no Go toolchain is on PATH (Go >= 1.26 from https://go.dev/dl)"
mkdir -p "$cache"
start=$SECONDS
say "building kustomize-build (kustomize API $(awk '/sigs.k8s.io\/kustomize\/api /{print $2}' "$src/go.mod"); once, cached in $cache)"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" .) >&2 ||
    die "the build failed (output above); check that the Go module proxy answers (go env GOPROXY)"
mv -f "$bin.tmp" "$bin"
say "built in $(( SECONDS - start ))s: $bin"
echo "$bin"
