#!/usr/bin/env bash
# Starts the servers `make test` uses (kube-apiserver with etcd, two
# docker-registry servers) and keeps them running until interrupted, so a
# developer can run single integration tests against them:
#
#   hack/dev-services.sh /tmp/kmmkit.env &     # once
#   source /tmp/kmmkit.env && go test ./registry -run Integration
#
# The env file also sets KMMKIT_INTEGRATION=1, the kernel tree and the
# Kaniko executor. Stopping this script (SIGINT/SIGTERM) stops exactly the
# servers it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
envfile=${1:?usage: hack/dev-services.sh ENVFILE}
hack/lib/deps.sh >&2
export PATH=$PATH:/usr/sbin:/sbin
KMMKIT_KERNEL_TREE=$(hack/lib/kernel-tree.sh)
KMMKIT_KANIKO_EXECUTOR=$(hack/lib/kaniko.sh)
export KMMKIT_KERNEL_TREE KMMKIT_KANIKO_EXECUTOR
# shellcheck source=lib/services.sh
source hack/lib/services.sh
trap 'services_stop; rm -f "$envfile"' EXIT
trap 'exit 0' INT TERM
services_start
{
	echo "export KMMKIT_INTEGRATION=1 PATH=\$PATH:/usr/sbin:/sbin"
	env | grep '^KMMKIT_' | grep -v '^KMMKIT_INTEGRATION=' | sed 's/^/export /'
} >"$envfile.tmp"
mv "$envfile.tmp" "$envfile"
echo "dev-services: ready; source $envfile" >&2
while :; do sleep 3600 & wait $!; done
