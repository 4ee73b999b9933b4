// Package preflight says, before a cluster upgrade, whether each Module
// would work on a kernel that no node runs yet, and why — the question
// KMM answers with its PreflightValidation resource, answered here as a
// function, with no resource to create.
//
// For each Module and kernel, a Checker resolves the kernel mapping (which
// one matches), asks the registry whether the image exists for that
// kernel and the nodes' platform, and lints it for the kernel (package
// lint: layout, vermagic, depmod's files, dependencies, firmware,
// signatures). When the image is missing it checks what the build and
// signing need — the Dockerfile ConfigMap, the build secrets, the signing
// key and certificate (and that they form a pair), the unsigned image —
// and, given a builder.Builder (WithBuilder), builds and signs it now and
// pushes it, so the upgrade finds it ready.
//
// Each Result has a Verdict (Works, Fails, or Unknown when a registry or
// the API server could not answer) and a reason constant of package
// reason: ImageReady, ImageBuildable, NoMapping, MappingFailed,
// InvalidSpec, ImageNotFound, ImageLintFailed, MissingSecret,
// InvalidRequest, BuildFailed, SignFailed, ReadFailed, or the registry's
// (Unauthorized, TLSError, RegistryUnavailable, …). Report.Condition
// folds a Report into one metav1.Condition an operator writes to its own
// status, for the kernel of a pending OS upgrade.
//
// `kmm preflight` is this package on the command line.
package preflight
