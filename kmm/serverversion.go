package kmm

import (
	"context"
	"time"

	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// serverVersionTTL is how long the API server's version is trusted before
// it is asked again (a cluster upgrade changes it).
const serverVersionTTL = 10 * time.Minute

// validateOptions are the options of v1beta1's validation for this
// cluster: the API server's version, so that KMM's version gates (such as
// the one for spec.dra) apply. When discovery fails or reports nothing,
// the gates are skipped, as KMM's hub webhook skips them. spec.dra is
// refused in any case (v1beta1.WithoutDRA): kmmkit runs no DRA driver.
func (r *Reconciler) validateOptions(ctx context.Context) []v1beta1.ValidateOption {
	r.mu.Lock()
	v, at := r.serverVersion, r.serverVersionAt
	r.mu.Unlock()
	if at.IsZero() || r.now().Sub(at) >= serverVersionTTL {
		info, err := r.client.Discovery().ServerVersion()
		if err != nil {
			r.logger(ctx).V(1).Info("cannot read the API server's version; skipping KMM's Kubernetes version gates", "error", err.Error())
		} else if _, perr := utilversion.ParseGeneric(info.GitVersion); perr != nil {
			r.logger(ctx).V(1).Info("the API server reports no usable version; skipping KMM's Kubernetes version gates", "version", info.GitVersion)
		} else {
			v = info.GitVersion
			r.mu.Lock()
			r.serverVersion, r.serverVersionAt = v, r.now()
			r.mu.Unlock()
		}
	}
	// kmmkit runs no DRA driver: spec.dra is refused, not ignored.
	opts := []v1beta1.ValidateOption{v1beta1.WithoutDRA()}
	if v == "" {
		return opts
	}
	return append(opts, v1beta1.WithKubernetesVersion(v))
}
