#!/usr/bin/env bash
# Installs what the integration tests need, once; a warm run checks and
# returns in a second. Everything a fresh machine needs is here.
#
#   hack/lib/deps.sh            install Debian packages and build cached tools
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
# took NAME prints how long NAME took when it was slow (a cold machine).
took() { ((SECONDS - t0 < 5)) || echo "deps: $1 took $((SECONDS - t0))s" >&2; t0=$SECONDS; }
t0=$SECONDS

# Debian packages the tests use, by the command they provide.
#   etcd-server: etcd, the kube-apiserver's store; curl and openssl: readiness checks and keys
#   kmod: kmod 30's depmod and modprobe, which our depmod is compared with
#   docker-registry (distribution 2.8) and apache2-utils (htpasswd): the registry tests
#   qemu-system-x86: boots Debian's kernel to load modules for real (this host's kernel cannot)
#   buildah and runc: the buildah builder's real multi-stage builds (vfs storage, chroot isolation)
#   netavark: the network backend buildah as a library (builder/buildahlib) insists on finding
#   make and gcc: compile the out-of-tree test modules against linux-headers
declare -A apt_packages=(
	[buildah]=buildah
	[runc]=runc
	[make]=make
	[gcc]=gcc
	[qemu-system-x86_64]=qemu-system-x86
	[docker-registry]=docker-registry
	[htpasswd]=apache2-utils
	[etcd]=etcd-server
	[curl]=curl
	[openssl]=openssl
	[depmod]=kmod
)

export PATH=$PATH:/usr/sbin:/sbin

# The Go-built tools (kube-apiserver, Kaniko's executor) and the repository's
# own modules only need Go and the module proxy: on a fresh machine they are
# fetched and built in the background while apt downloads and unpacks, so the
# network-bound and the CPU-bound halves overlap.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
bg() {
	local name=$1
	shift
	("$@" >"$logs/$name.out" 2>"$logs/$name.err"; echo $? >"$logs/$name.rc") &
}
bg kube-apiserver "$root/hack/lib/kube-apiserver.sh"
bg kaniko "$root/hack/lib/kaniko.sh"
bg modules sh -c "cd '$root' && go mod download && cd '$root/controllerruntime' && go mod download && cd '$root/builder/buildahlib' && go mod download"
bg controller-gen sh -c "cd '$root/hack/tools' && go build -o /dev/null sigs.k8s.io/controller-tools/cmd/controller-gen"

missing=()
for cmd in "${!apt_packages[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${apt_packages[$cmd]}")
done
[[ -x /usr/lib/podman/netavark ]] || missing+=(netavark) # not on PATH
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}" >&2
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: need root to install Debian packages: ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

took "Debian packages"

# A Debian kernel module tree, unpacked from its package, cached across runs,
# and the matching headers, to build out-of-tree test modules against it.
tree=$("$root/hack/lib/kernel-tree.sh")
kver=$(ls "$tree/lib/modules")
if [[ ! -d /usr/src/linux-headers-$kver ]]; then
	echo "deps: installing linux-headers-$kver" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "linux-headers-$kver" >&2 ||
		{ apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "linux-headers-$kver" >&2; }
fi
took "the kernel tree and headers"

# The background half: a kube-apiserver and Kaniko's executor built from the
# Go module proxy and cached across runs, and the modules the tests compile.
wait
for name in kube-apiserver kaniko modules controller-gen; do
	if [[ $(cat "$logs/$name.rc") != 0 ]]; then
		cat "$logs/$name.err" >&2
		echo "deps: $name failed" >&2
		exit 1
	fi
	grep -v '^go: downloading' "$logs/$name.err" >&2 || true
done
took "kube-apiserver, Kaniko's executor, controller-gen and Go modules (after the rest)"
