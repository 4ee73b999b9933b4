// Package registry talks to container registries for kmmkit: it answers
// whether a kernel-module image exists ([Checker], an [ImageChecker]),
// with credentials from Kubernetes pull secrets ([SecretKeychain],
// [DockerConfigKeychain]), KMM's TLS options and custom CAs, retries of
// transient failures, and a cache that collapses concurrent checks of one
// image into one request.
//
// Outcomes a caller acts on are distinct: an image that exists (with its
// digest), one that does not (a nil error and Result.Exists false), and
// errors of the kinds [ReasonUnauthorized], [ReasonTLS], [ReasonUnavailable]
// and [ReasonInvalid] (see [ReasonOf]). Definite answers are never retried.
//
// registry/fake holds an in-memory ImageChecker for tests.
package registry
