// Package kmmkit is a Go SDK that gives any Kubernetes operator the whole of
// Kernel Module Management (KMM): pick the kernel-module image for each
// node's kernel, check that it exists in a registry, build and sign it when
// it does not, and load it on the node.
//
// The SDK is a set of small packages, each with one job:
//
//   - [github.com/kmmkit/kmmkit/kmm/v1beta1]: the Module API, field for field
//     compatible with KMM's kmm.sigs.x-k8s.io/v1beta1 Module, with strict
//     decoding of existing manifests and every validation rule of KMM's
//     admission webhook and CRD;
//   - [github.com/kmmkit/kmmkit/kernelmap]: a node kernel and a Module in,
//     one resolved per-kernel record out (image, build, sign, TLS, …), with
//     KMM's matching and merge rules and strict variable substitution;
//   - [github.com/kmmkit/kmmkit/kmm]: the entry point for operator authors;
//   - registry, builder, depmod and loader: image checks, builds, a native
//     depmod and module loading, each with a fake for users' tests.
//
// The kmm command (cmd/kmm) exposes the same pieces on the command line:
//
//	go run ./cmd/kmm map -f examples/modules/kmm-ci-a.yaml --kernel 6.1.0-56-amd64
//	go run ./cmd/kmm validate -f examples/modules/kmm-ci-a.yaml
package kmmkit
