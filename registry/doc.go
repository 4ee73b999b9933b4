// Package registry talks to container registries for kmmkit: it answers
// whether a kernel-module image exists ([Client], an [ImageChecker]),
// with credentials from Docker config documents ([DockerConfigKeychain];
// registry/pullsecret reads Kubernetes pull secrets into them with
// client-go, which registry itself never imports, so the node-side worker
// pulls without it), KMM's TLS options and custom CAs, retries of
// transient failures, and a cache that collapses concurrent checks of one
// image into one request and is keyed by the credentials' content.
//
// Outcomes a caller acts on are distinct: an image that exists (with its
// digest; its manifest and every blob of it are in the registry), one
// that does not (a nil error and Result.Exists false, only on a
// registry's definite 404 with the distribution spec's error code), and
// errors whose reason (package reason, via reason.Of) says whose fault it
// is: Unauthorized, TLSError, RegistryUnavailable, InvalidReference,
// RegistryError (an answer that is not a registry's), UnsafeImage (an
// oversized manifest), ImageCorrupt, LocalIOError. Definite answers are
// never retried. Error messages never show a response body from a
// storage redirect, a query string or a credential.
//
// Every request is bounded: at most 10 redirects, a body read that makes
// no progress for the idle timeout fails (WithIdleTimeout), a manifest is
// capped while it is read (WithMaxManifestSize), Retry-After is honoured
// up to RetryPolicy.MaxRetryAfter, and calls whose context has no
// deadline get the Client's (WithTimeouts).
//
// [Client.Extract] pulls a kernel-module image and unpacks only its module
// tree and firmware: every path is resolved beneath a staging directory by
// the kernel (no link leads out), every layer is checked against its
// digest and diff ID, and only then is the result renamed into place;
// [Client.Push] and [Client.PushIndex] publish built images.
//
// registry/fake holds an in-memory ImageChecker for tests.
package registry
