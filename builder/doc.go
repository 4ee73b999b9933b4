// Package builder will build, and sign, a kernel-module image when the
// image a Module maps a kernel to is missing: one Builder interface with
// buildah, Kaniko-in-cluster, OpenShift Build and daemonless-assembler
// backends, and a fake for tests.
//
// It has no API yet: this package reserves its place in the layout.
package builder
