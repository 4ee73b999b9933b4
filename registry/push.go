package registry

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push writes img to req.Image with the request's credentials and TLS
// settings, and returns the pushed manifest's digest. The cached answers
// for the image are dropped, so the next Check sees it. The push is
// bounded by the transfer timeout (WithTimeouts) unless ctx ends sooner.
func (c *Client) Push(ctx context.Context, req Request, img v1.Image) (string, error) {
	ctx, cancel := deadline(ctx, "push", c.transferTimeout)
	defer cancel()
	ref, err := ParseReference(req.Image, req.TLS)
	if err != nil {
		return "", &Error{Reason: ReasonInvalid, Image: req.Image, Err: err}
	}
	opts := append(c.remoteOptions(req), remote.WithContext(ctx))
	if err := remote.Write(ref, img, opts...); err != nil {
		return "", classify(req.Image, err, req.Auth)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	c.Invalidate(req.Image)
	return d.String(), nil
}
