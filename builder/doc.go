// Package builder builds, and signs, a kernel-module image when the image
// a Module maps a kernel to is missing.
//
// A [Request] is built from a resolved per-kernel record (NewRequest); a
// [Builder] backend turns it into an image with [Builder.Sync], a
// level-triggered, idempotent call: it starts the build, or reports the one
// already running for the same request ([Request.Hash]), replaces a stale
// one, retries failures a bounded number of times with backoff
// ([RetryPolicy]) and garbage-collects successful builds after a delay.
//
// Backends:
//   - builder/kaniko: a Kaniko Pod in the cluster, as KMM creates it;
//   - builder/openshift: an OpenShift build.openshift.io/v1 Build;
//   - builder/buildah: local builds with Debian's buildah command, and
//     github.com/kmmkit/kmmkit/builder/buildahlib (a Go module of its own,
//     kmmkit's only cgo) with buildah as a library;
//   - builder/assemble: prebuilt .ko files + the native depmod (+ signing)
//     into a reproducible OCI image, with no daemon and no Dockerfile;
//   - builder/fake: scriptable, for tests.
//
// builder/signfile is the native sign-file; builder/sign signs the modules
// of an image and pushes the signed image.
package builder
