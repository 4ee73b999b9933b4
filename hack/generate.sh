#!/usr/bin/env bash
# Regenerates the DeepCopy methods of the API types with controller-gen,
# pinned in hack/tools/go.mod. With --check, it fails when the committed
# files differ from what the generator writes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

gen() {
	(cd hack/tools && go tool controller-gen \
		object:headerFile="$root/hack/boilerplate.go.txt" \
		paths="$root/kmm/v1beta1/...")
}

if [[ "${1:-}" == "--check" ]]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	cp kmm/v1beta1/zz_generated.deepcopy.go "$tmp/before.go"
	gen
	if ! diff -u "$tmp/before.go" kmm/v1beta1/zz_generated.deepcopy.go; then
		cp "$tmp/before.go" kmm/v1beta1/zz_generated.deepcopy.go
		echo "generate: kmm/v1beta1/zz_generated.deepcopy.go is stale; run 'make generate'" >&2
		exit 1
	fi
	echo "generate: DeepCopy methods are up to date"
else
	gen
fi
