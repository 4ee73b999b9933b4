// Package builder will build, and sign, a kernel-module image when the
// image a Module maps a kernel to is missing: one Builder interface with
// buildah, Kaniko-in-cluster, OpenShift Build and daemonless-assembler
// backends, and a fake for tests.
//
// So far it holds [github.com/kmmkit/kmmkit/builder/signfile], the native
// equivalent of the kernel's sign-file; the Builder interface and its
// backends come with the builders issue.
package builder
