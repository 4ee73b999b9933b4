#!/usr/bin/env bash
# Builds kube-apiserver from the Go module proxy and caches the binary under
# $KMMKIT_CACHE (default ~/.cache/kmmkit). Prints the binary's path.
#
#   hack/lib/kube-apiserver.sh [VERSION]      (default: $KUBE_VERSION or 1.34.4)
#
# k8s.io/kubernetes refers to its staging modules with relative replace
# lines, so a wrapper module repeats them against the proxy's copies.
set -euo pipefail
version=${1:-${KUBE_VERSION:-1.34.4}}
cache=${KMMKIT_CACHE:-$HOME/.cache/kmmkit}
bin=$cache/kube-apiserver-v$version
if [[ -x $bin ]]; then
	echo "$bin"
	exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/kas-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
minor=${version#*.}
staging=0.${minor}

echo "kube-apiserver: building v$version (first run only, about 3 minutes)" >&2
gomod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
[[ -f $gomod ]] || { echo "kube-apiserver: could not download k8s.io/kubernetes@v$version" >&2; exit 1; }
{
	echo "module kmmkit.local/kube-apiserver"
	echo "go 1.24"
	echo "require k8s.io/kubernetes v$version"
	echo "replace ("
	sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\t\1 => \1 v'"$staging"'#p' "$gomod"
	echo ")"
} > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > "$work/tools.go"
(cd "$work" && go mod tidy >&2)
pkg=k8s.io/component-base/version
(cd "$work" && CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X $pkg.gitVersion=v$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor%%.*} -X $pkg.gitTreeState=clean" \
	-o "$bin.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$bin.tmp" "$bin"
echo "$bin"
