#!/usr/bin/env bash
# Regenerates, with controller-gen pinned in hack/tools/go.mod, the DeepCopy
# methods of the API types and the Module CRD that kmm/v1beta1 embeds, and
# the CRDs of kmm/v1beta1/internal/embedtest (an embedder's resources, whose
# size the tests measure), the drop-in operator's roles (from the
# kubebuilder:rbac markers of controllerruntime/operator and
# controllerruntime/cmd/kmm-operator), its copy of the CRD, and the role of
# examples/controller-runtime and its CRD. With --check, it fails when the committed
# files differ from what it writes.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
embedtest=kmm/v1beta1/internal/embedtest
generated=(kmm/v1beta1/zz_generated.deepcopy.go kmm/v1beta1/crd/kmm.sigs.x-k8s.io_modules.yaml
	"$embedtest/zz_generated.deepcopy.go" "$embedtest/crd/embedtest.kmmkit.io_nicdrivers.yaml"
	"$embedtest/crd/embedtest.kmmkit.io_gpudrivers.yaml"
	controllerruntime/config/rbac/role.yaml controllerruntime/config/rbac/openshift_builds_role.yaml
	controllerruntime/config/crd/kmm.sigs.x-k8s.io_modules.yaml examples/controller-runtime/config/role.yaml
	examples/controller-runtime/config/example.kmmkit.io_nicdrivers.yaml)

gen() {
	for pkg in kmm/v1beta1 "$embedtest"; do
		(cd hack/tools && go tool controller-gen \
			object:headerFile="$root/hack/boilerplate.go.txt" \
			crd:crdVersions=v1 output:crd:dir="$root/$pkg/crd" \
			paths="$root/$pkg")
	done
	local cr=$root/controllerruntime rbac
	rbac=$(mktemp -d)
	(cd hack/tools && go tool controller-gen rbac:roleName=kmm-operator output:rbac:dir="$cr/config/rbac" \
		paths="$cr/operator/..." paths="$cr/cmd/kmm-operator/..." &&
		go tool controller-gen rbac:roleName=kmm-operator-openshift-builds output:rbac:dir="$rbac" \
			paths="$cr/internal/openshiftrbac/...")
	mv "$rbac/role.yaml" "$cr/config/rbac/openshift_builds_role.yaml"
	# The example embedder: its own rules plus kmmkit's.
	(cd hack/tools && go tool controller-gen rbac:roleName=nicdriver-operator output:rbac:dir="$root/examples/controller-runtime/config" \
		paths="$root/examples/controller-runtime" paths="$cr/operator/...")
	rmdir "$rbac"
	# The example embedder's CRD: a NICDriver with the small embedded spec.
	(cd hack/tools && go tool controller-gen crd:crdVersions=v1 output:crd:dir="$root/examples/controller-runtime/config" \
		paths="$root/examples/controller-runtime/api/...")
	cp kmm/v1beta1/crd/kmm.sigs.x-k8s.io_modules.yaml "$cr/config/crd/"
}

if [[ "${1:-}" == "--check" ]]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	for f in "${generated[@]}"; do
		mkdir -p "$tmp/$(dirname "$f")"
		cp "$f" "$tmp/$f"
	done
	gen
	stale=0
	for f in "${generated[@]}"; do
		if ! diff -u "$tmp/$f" "$f" >&2; then
			cp "$tmp/$f" "$f"
			echo "generate: $f is stale; run 'make generate'" >&2
			stale=1
		fi
	done
	((stale == 0)) || exit 1
	echo "generate: generated files are up to date"
else
	gen
fi
