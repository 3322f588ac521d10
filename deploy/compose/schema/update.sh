#!/usr/bin/env bash
# Fetch compose-spec.json from compose-go at a version, through the Go module proxy
# (go mod download verifies the zip against sum.golang.org), into this folder.
#   deploy/compose/schema/update.sh v2.17.0
set -euo pipefail
version=${1:?usage: update.sh vX.Y.Z (a tag of github.com/compose-spec/compose-go/v2)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module=github.com/compose-spec/compose-go/v2
info=$(cd /tmp && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$module@$version" || true)
zip=$(sed -n 's/^[[:space:]]*"Zip": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
sum=$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$/\1/p' <<<"$info")
[[ -s $zip ]] || { echo "go mod download gave no zip:" >&2; echo "$info" >&2; exit 1; }
unzip -p "$zip" "$module@$version/schema/compose-spec.json" > "$here/compose-spec.json"
echo "compose-go $version: go.sum $sum, sha256 $(sha256sum "$here/compose-spec.json" | cut -d' ' -f1)"
