package registry

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push writes img to req.Image with the request's credentials and TLS
// settings, and returns the pushed manifest's digest. The cached answers
// for the image are dropped, so the next Check sees it. The push is
// bounded by the transfer timeout (WithTimeouts) unless ctx ends sooner.
func (c *Client) Push(ctx context.Context, req Request, img v1.Image) (string, error) {
	return c.push(ctx, req, img, func(ref name.Reference, opts []remote.Option) error { return remote.Write(ref, img, opts...) })
}

// PushIndex writes an image index and every image it holds to req.Image,
// as Push writes an image, and returns the index's digest.
func (c *Client) PushIndex(ctx context.Context, req Request, idx v1.ImageIndex) (string, error) {
	return c.push(ctx, req, idx, func(ref name.Reference, opts []remote.Option) error { return remote.WriteIndex(ref, idx, opts...) })
}

// push runs write on req.Image and returns what's digest.
func (c *Client) push(ctx context.Context, req Request, what interface{ Digest() (v1.Hash, error) }, write func(name.Reference, []remote.Option) error) (string, error) {
	ctx, cancel := deadline(ctx, "push", c.transferTimeout)
	defer cancel()
	ref, err := ParseReference(req.Image, req.TLS)
	if err != nil {
		return "", &Error{Reason: ReasonInvalid, Image: req.Image, Err: err}
	}
	if err := write(ref, append(c.remoteOptions(req), remote.WithContext(ctx))); err != nil {
		return "", classify(req.Image, err, req.Auth)
	}
	d, err := what.Digest()
	if err != nil {
		return "", err
	}
	c.Invalidate(req.Image)
	return d.String(), nil
}
