# kmmkit developer commands. `make test` is the one CI runs.

GO ?= go

.PHONY: test unit generate bench bench-depmod bench-sign bench-reconcile bench-fleet fuzz kmm kmm-worker worker-image quickstart

## test: install test dependencies, start servers, vet, and run every test with -race
test:
	hack/test.sh

## unit: the fast tests only (integration tests skip)
unit:
	$(GO) test ./...

## generate: regenerate DeepCopy methods and the CRD
generate:
	hack/generate.sh

## bench: run the benchmarks
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: run each fuzz target for FUZZTIME (default 30s)
FUZZTIME ?= 30s
fuzz:
	hack/fuzz.sh $(FUZZTIME)

## bench-depmod: kmod's depmod against ours: median wall, CPU, peak RSS, ratios, on Debian's 6.1 tree as shipped (.ko) and recompressed as modules_install does (COMPRESS="none zst", add xz), then on the 6.12 backport tree as shipped (.ko.xz; SHIPPED= to skip, or other unpacked packages). TREE=, RUNS=9, PROFILE=dir for pprof profiles
COMPRESS ?= none zst
RUNS ?= 9
SHIPPED ?= $$(hack/benchdepmod/backports-tree.sh)
bench-depmod:
	KMMKIT_KERNEL_TREE=$(or $(TREE),$$(hack/lib/kernel-tree.sh)) $(GO) run ./hack/benchdepmod -runs $(RUNS) -compress "$(COMPRESS)" -shipped "$(SHIPPED)" $(if $(PROFILE),-profile $(PROFILE))

## quickstart: the whole pipeline on an embedded registry and in-memory cluster (no cluster, no network)
quickstart:
	$(GO) run ./examples/quickstart

## bench-reconcile: full Reconcile passes, 10 Modules on 5,000 nodes and 50 kernels (fakes), and a pull-secret Module on the real registry.Client (in-process registry with Basic auth): time, allocations, registry requests, API writes
bench-reconcile:
	$(GO) test ./kmm -run '^$$' -bench ReconcileScale -benchtime 5x -v

## bench-fleet: the Reconciler and PodLoader on the real kube-apiserver and an htpasswd registry it starts (and stops): 5,000 nodes on 50 kernels, 10 Modules with imageRepoSecret; first rollout, steady pass, kernel change on 1,000 nodes (time, API requests by verb, writes per (node, module), registry requests) and the controller's peak RSS and heap. ARGS= for hack/benchfleet flags (-nodes, -modules, -qps, ...)
bench-fleet:
	hack/bench-fleet.sh $(ARGS)

## kmm: the static kmm binary (also a drop-in depmod: `kmm depmod ...`) in bin/
kmm:
	CGO_ENABLED=0 $(GO) build -o bin/kmm ./cmd/kmm

## kmm-worker: the static worker binary (worker and depmod only, no Kubernetes client) in bin/
kmm-worker:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' -o bin/kmm-worker ./cmd/kmm-worker

## worker-image: build the worker image (linux/amd64 and linux/arm64, FROM scratch, no daemon, reproducible) and push it: make worker-image REF=registry.example.com/kmm-worker:v1 [WORKER_IMAGE_FLAGS='--platform linux/amd64 --insecure']
worker-image:
	@test -n "$(REF)" || { echo "usage: make worker-image REF=registry.example.com/kmm-worker:v1 [WORKER_IMAGE_FLAGS=...]" >&2; exit 2; }
	$(GO) run ./cmd/kmm image worker $(REF) --go $(GO) $(WORKER_IMAGE_FLAGS)

## bench-sign: sign the Debian tree in-process and with one sign-file process per module
bench-sign:
	KMMKIT_KERNEL_TREE=$$(hack/lib/kernel-tree.sh) $(GO) run ./hack/benchsign
