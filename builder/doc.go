// Package builder will build, and sign, a kernel-module image when the
// image a Module maps a kernel to is missing: one Builder interface with
// buildah, Kaniko-in-cluster, OpenShift Build and daemonless-assembler
// backends, and a fake for tests.
//
// So far it holds [github.com/kmmkit/kmmkit/builder/signfile], the native
// equivalent of the kernel's sign-file, and
// [github.com/kmmkit/kmmkit/builder/assemble], which packs prebuilt
// modules (signed, indexed by the native depmod) into a reproducible OCI
// image without a container engine. The Builder interface and its
// backends come with the builders issue.
package builder
