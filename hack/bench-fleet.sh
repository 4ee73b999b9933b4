#!/usr/bin/env bash
# make bench-fleet: kmmkit at fleet scale on the real kube-apiserver (with
# etcd) and a loopback registry with htpasswd authentication, both started
# here (hack/lib/services.sh) and stopped afterwards, exactly the
# processes started. Arguments go to hack/benchfleet (-nodes 5000
# -kernels 50 -modules 10 -changed 1000 -qps 300 -burst 600 -workers 10
# -ttl 1h).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
hack/lib/deps.sh
export PATH=$PATH:/usr/sbin:/sbin
bin=$(mktemp -d)
# shellcheck source=lib/services.sh
source hack/lib/services.sh
trap 'services_stop; rm -rf "$bin"' EXIT
trap 'exit 1' INT TERM
go build -o "$bin/benchfleet" ./hack/benchfleet
services_start
echo "load before: $(uptime)"
"$bin/benchfleet" "$@"
echo "load after: $(uptime)"
