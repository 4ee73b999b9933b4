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
module_pids=() # the other modules' tests, started below
finish() {
	# The other modules' tests, if the suite stops before they end.
	((${#module_pids[@]} == 0)) || kill "${module_pids[@]}" 2>/dev/null || true
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

# The builds on other OSes and the three other Go modules' tests run
# beside the main module's: the suite waits on servers, qemu and buildah
# for much of its time, so two cores stay busy only when more than one
# test binary (or build) runs.
modules_dir=$(mktemp -d)
buildah_tags='containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper'
background() {
	local name=$1
	shift
	(set +e; "$@" >"$modules_dir/$name.log" 2>&1; echo $? >"$modules_dir/$name.rc") &
	module_pids+=($!)
}
# The node side (loader/node) fails with ErrNotLinux on other OSes;
# everything else is portable. (darwin only: each OS is one more compile
# of every dependency on a fresh machine; `GOOS=windows go build ./...`
# passes too, run it by hand.)
other_os() { GOOS=darwin go build ./... && (cd controllerruntime && GOOS=darwin go build ./...); }
# race: the module's tests run with -race, but buildahlib's: its code is
# one goroutine-free call into buildah, and -race would instrument the
# whole of buildah and containers/storage (cgo) for it, minutes on a
# fresh machine.
module_test() {
	local dir=$1 tags=$2 race=$3
	(cd "$dir" && go vet ${tags:+-tags "$tags"} ./... && go test $race -count=1 ${tags:+-tags "$tags"} ./...)
}
background other-os other_os
background buildahlib module_test builder/buildahlib "$buildah_tags" ""
background controllerruntime module_test controllerruntime "" -race
background examples-controller-runtime module_test examples/controller-runtime "" -race

step "go test -race (the main module; the other modules' tests run beside it)"
main_rc=0
go test -race -count=1 "$@" ./... || main_rc=$?
wait "${module_pids[@]}" # only these: the servers run in the background too
failed=$main_rc
for m in "builds on other OSes:other-os:GOOS=darwin go build ./..., here and in controllerruntime" \
	"builder/buildahlib:buildahlib:its own module, buildah as a library, kmmkit's only cgo" \
	"controllerruntime:controllerruntime:its own module, the controller-runtime integration and the drop-in kmm-operator" \
	"examples/controller-runtime:examples-controller-runtime:its own module, so the SDK does not depend on controller-runtime"; do
	IFS=: read -r dir name why <<<"$m"
	step "$dir ($why)"
	cat "$modules_dir/$name.log"
	[[ $(cat "$modules_dir/$name.rc") == 0 ]] || failed=1
done
rm -rf "$modules_dir"
exit "$failed"
