#!/usr/bin/env bash
# Starts the servers integration tests use, on 127.0.0.1 only, and stops
# exactly the processes it started. Source it, then:
#
#   services_start        start every server; exports the KMMKIT_* variables
#   services_stop         stop them (also safe to call twice)
#
# Each server gets a free port, a private directory under $services_dir and
# a log there; its PID is recorded in $services_dir/pids. Nothing else is
# ever signalled.

services_dir=""
services_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# free_port prints a TCP port on 127.0.0.1 that nothing listens on.
free_port() {
	local port
	for _ in $(seq 1 200); do
		port=$((20000 + RANDOM % 20000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			if ! grep -qx "$port" "$services_dir/ports" 2>/dev/null; then
				echo "$port" >>"$services_dir/ports"
				echo "$port"
				return 0
			fi
		fi
	done
	echo "services: no free port found" >&2
	return 1
}

# start_server NAME COMMAND... runs COMMAND in the background with its output
# in $services_dir/NAME.log and records its PID.
start_server() {
	local name=$1
	shift
	"$@" >"$services_dir/$name.log" 2>&1 &
	echo "$! $name" >>"$services_dir/pids"
}

# wait_for NAME SECONDS COMMAND... retries COMMAND until it succeeds, or
# fails with the server's log when SECONDS pass or the server exits.
wait_for() {
	local name=$1 secs=$2
	shift 2
	local pid
	pid=$(awk -v n="$name" '$2 == n {print $1}' "$services_dir/pids")
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "services: $name exited; its log:" >&2
			tail -n 40 "$services_dir/$name.log" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			echo "services: $name not ready after ${secs}s; its log:" >&2
			tail -n 40 "$services_dir/$name.log" >&2
			return 1
		fi
		sleep 0.2
	done
}

start_kube_apiserver() {
	local kas etcd_port etcd_peer kas_port dir=$services_dir/kube
	kas=$("$services_root/hack/lib/kube-apiserver.sh")
	mkdir -p "$dir/certs"
	etcd_port=$(free_port)
	etcd_peer=$(free_port)
	start_server etcd etcd --name kmmkit --data-dir "$dir/etcd" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
		--initial-cluster "kmmkit=http://127.0.0.1:$etcd_peer" --listen-metrics-urls "http://127.0.0.1:$(free_port)"
	wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

	openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
	openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
	local token
	token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	echo "$token,kmmkit-admin,1,\"system:masters\"" >"$dir/tokens.csv"
	kas_port=$(free_port)
	start_server kube-apiserver "$kas" --etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$kas_port" --cert-dir="$dir/certs" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
		--service-cluster-ip-range=10.0.0.0/24 --authorization-mode=RBAC --token-auth-file="$dir/tokens.csv" \
		--enable-priority-and-fairness=false --allow-privileged=true
	wait_for kube-apiserver 60 curl -sf --cacert "$dir/certs/apiserver.crt" -H "Authorization: Bearer $token" \
		"https://127.0.0.1:$kas_port/readyz"
	cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: kmmkit
  cluster:
    server: https://127.0.0.1:$kas_port
    certificate-authority: $dir/certs/apiserver.crt
users:
- name: kmmkit-admin
  user:
    token: $token
contexts:
- name: kmmkit
  context: {cluster: kmmkit, user: kmmkit-admin}
current-context: kmmkit
KUBECONFIG
	export KMMKIT_KUBECONFIG=$dir/kubeconfig
	echo "services: kube-apiserver $("$kas" --version | awk '{print $2}') on 127.0.0.1:$kas_port (etcd on :$etcd_port)" >&2
}

# start_registries starts Debian's docker-registry twice: plain HTTP, and
# TLS (a CA made for the run) with htpasswd (bcrypt) authentication.
start_registries() {
	local dir=$services_dir/registry plain_port tls_port
	mkdir -p "$dir/plain" "$dir/tls"
	plain_port=$(free_port)
	tls_port=$(free_port)
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kmmkit-test-ca" \
		-keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/san.ext"
	openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
		-extfile "$dir/san.ext" -out "$dir/tls.crt" 2>/dev/null
	local user=kmmkit pass
	pass=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
	htpasswd -Bbc "$dir/htpasswd" "$user" "$pass" 2>/dev/null
	cat >"$dir/plain.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/plain}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$plain_port
  secret: kmmkit-plain
YAML
	cat >"$dir/tls.yml" <<YAML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $dir/tls}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$tls_port
  secret: kmmkit-tls
  tls: {certificate: $dir/tls.crt, key: $dir/tls.key}
auth:
  htpasswd: {realm: kmmkit, path: $dir/htpasswd}
YAML
	start_server registry-plain docker-registry serve "$dir/plain.yml"
	start_server registry-tls docker-registry serve "$dir/tls.yml"
	wait_for registry-plain 30 curl -sf "http://127.0.0.1:$plain_port/v2/"
	wait_for registry-tls 30 curl -s -o /dev/null --cacert "$dir/ca.crt" "https://127.0.0.1:$tls_port/v2/"
	export KMMKIT_REGISTRY=127.0.0.1:$plain_port
	export KMMKIT_REGISTRY_TLS=127.0.0.1:$tls_port
	export KMMKIT_REGISTRY_CA=$dir/ca.crt
	export KMMKIT_REGISTRY_USER=$user
	export KMMKIT_REGISTRY_PASSWORD=$pass
	echo "services: docker-registry $(docker-registry --version | awk '{print $3}') on $KMMKIT_REGISTRY (plain) and $KMMKIT_REGISTRY_TLS (TLS, htpasswd)" >&2
}

services_start() {
	services_dir=$(mktemp -d "${TMPDIR:-/tmp}/kmmkit-services.XXXXXX")
	: >"$services_dir/pids"
	export KMMKIT_SERVICES_DIR=$services_dir
	start_kube_apiserver
	start_registries
}

services_stop() {
	[[ -n $services_dir && -f $services_dir/pids ]] || return 0
	local pid name
	# Newest first: a server stops before what it depends on (the
	# kube-apiserver before etcd).
	while read -r pid name; do
		kill -TERM "$pid" 2>/dev/null || continue
		for _ in $(seq 1 100); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "services: $name ($pid) did not stop in 10s; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done < <(tac "$services_dir/pids")
	rm -rf "$services_dir"
	services_dir=""
}
