#!/usr/bin/env bash
# Builds Kaniko's executor (static) from the Go module proxy and caches it
# under $KMMKIT_CACHE (default ~/.cache/kmmkit). Prints the binary's path.
#
#   hack/lib/kaniko.sh [VERSION]      (default: 1.23.2)
#
# Tests only ever run it inside a runc container with its own root
# filesystem: the executor replaces the root filesystem it runs on.
set -euo pipefail
version=${1:-1.23.2}
cache=${KMMKIT_CACHE:-$HOME/.cache/kmmkit}
bin=$cache/kaniko-executor-v$version
if [[ -x $bin ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/kaniko-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "kaniko: building the executor v$version (first run only, about 2 minutes)" >&2
printf 'module kmmkit.local/kaniko\n\ngo 1.22\n' > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/GoogleContainerTools/kaniko/cmd/executor"\n' > "$work/tools.go"
if ! (cd "$work" && go get "github.com/GoogleContainerTools/kaniko/cmd/executor@v$version" && go mod tidy &&
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin.tmp" github.com/GoogleContainerTools/kaniko/cmd/executor) >"$work/build.log" 2>&1; then
	tail -20 "$work/build.log" >&2
	echo "kaniko: building the executor failed" >&2
	exit 1
fi
mv "$bin.tmp" "$bin"
echo "$bin"
