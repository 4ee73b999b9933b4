package kmmtest

import "github.com/kmmkit/kmmkit/reason"

// RegistryError is a registry failure that carries a reason, as the
// registry package's errors do (it implements reason.Carrier). Script it
// with FailImage, or Registry.SetError for other errors.
type RegistryError struct {
	// Reason is what the registry answered: reason.Unauthorized,
	// reason.TLSError, reason.RegistryUnavailable, reason.RegistryError, …
	Reason reason.Reason
	// Image is the image that was checked.
	Image string
	// Detail says more (which pull secret, which certificate).
	Detail string
}

// Error implements error.
func (e *RegistryError) Error() string {
	msg := e.Image + ": " + string(e.Reason)
	if e.Detail != "" {
		msg += " (" + e.Detail + ")"
	}
	return msg
}

// ReasonOf implements reason.Carrier.
func (e *RegistryError) ReasonOf() reason.Reason { return e.Reason }

// FailImage makes every registry check of image fail with r and detail,
// until Registry.SetExists or SetMissing is called for it.
func (h *Harness) FailImage(image string, r reason.Reason, detail string) {
	h.Registry.SetError(image, &RegistryError{Reason: r, Image: image, Detail: detail})
}
