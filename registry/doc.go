// Package registry talks to container registries for kmmkit: it answers
// whether a kernel-module image exists ([Client], an [ImageChecker]),
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
// [Client.Extract] pulls a kernel-module image and unpacks only its module
// tree and firmware, safely; [Client.Push] publishes built images.
//
// registry/fake holds an in-memory ImageChecker for tests.
package registry
