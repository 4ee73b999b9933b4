// Package sign signs the kernel modules of a kmod image and pushes the
// signed image: it reads the unsigned image, signs every file that matches
// the Module's filesToSign globs with the native sign-file, adds the
// signed files as one layer on top, and pushes the result to the final
// tag. Nothing runs in the cluster and nothing needs privileges.
//
// KMM's build-then-sign pushes the unsigned build to the final tag and
// signs it in place, so nodes can pull unsigned modules meanwhile, and a
// sign failure leaves them there (and can loop between build and sign).
// With kmmkit, a build that is to be signed pushes to IntermediateTag, and
// only the signed image is ever pushed to the final tag.
package sign

import (
	"archive/tar"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/depmod/modfile"
	"github.com/kmmkit/kmmkit/internal/ctxlog"
	"github.com/kmmkit/kmmkit/internal/ociimage"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
	"github.com/kmmkit/kmmkit/registry"
)

// Secret keys KMM reads the signing key and certificate from.
const (
	KeySecretKey  = "key"
	CertSecretKey = "cert"
)

// Request is one image to sign.
type Request struct {
	// From is the unsigned image (sign.unsignedImage, or the intermediate
	// tag a build pushed), with its TLS options and credentials.
	From registry.Request
	// To is the final image.
	To registry.Request
	// FilesToSign are absolute paths in the image; shell globs allowed
	// (path.Match). Each must match at least one file.
	FilesToSign []string
	// Key and Cert are the PEM private key and the PEM or DER certificate.
	Key, Cert []byte
	// Hash is the digest algorithm; 0 means SHA-256, as KMM uses.
	Hash crypto.Hash
}

// Result describes a signed image.
type Result struct {
	// Digest is the pushed image's manifest digest.
	Digest string
	// Signed lists the image paths that were signed.
	Signed []string
}

// Signer signs images through a registry client.
type Signer struct {
	client *registry.Client
	log    ctxlog.Logger
}

// Option configures a Signer (see New). Options only record a value.
type Option func(*options)

type options struct {
	log ctxlog.Logger
}

// WithLogger makes the Signer log each signed image to l. Without it,
// each Sign logs to the logger of its context (logr.FromContextOrDiscard).
func WithLogger(l logr.Logger) Option { return func(o *options) { o.log = ctxlog.Given(l) } }

// New returns a Signer that pulls and pushes with client; it fails
// without one.
func New(client *registry.Client, opts ...Option) (*Signer, error) {
	if client == nil {
		return nil, errors.New("sign: New needs a registry client")
	}
	var o options
	for _, f := range opts {
		f(&o)
	}
	return &Signer{client: client, log: o.log}, nil
}

// Sign signs req.From's modules and pushes the signed image to req.To.
func (s *Signer) Sign(ctx context.Context, req Request) (Result, error) {
	if len(req.FilesToSign) == 0 {
		return Result{}, errors.New("sign: filesToSign is empty")
	}
	if req.From.Image == "" {
		return Result{}, errors.New("sign: no image to sign given (sign.unsignedImage is empty and nothing was built)")
	}
	if req.From.Image == req.To.Image {
		return Result{}, fmt.Errorf("sign: the unsigned image and the signed image are both %s; unsigned modules must not be published at the final tag", req.To.Image)
	}
	h := req.Hash
	if h == 0 {
		h = crypto.SHA256
	}
	signer, err := signfile.ParseSigner(h, req.Key, req.Cert)
	if err != nil {
		return Result{}, fmt.Errorf("sign: %w", err)
	}
	img, _, err := s.client.Pull(ctx, req.From)
	if err != nil {
		return Result{}, fmt.Errorf("sign: reading %s: %w", req.From.Image, err)
	}
	signed, err := SignImage(img, req.FilesToSign, signer)
	if err != nil {
		return Result{}, fmt.Errorf("sign: %s: %w", req.From.Image, err)
	}
	defer signed.Close()
	digest, err := s.client.Push(ctx, req.To, signed.Image)
	if err != nil {
		return Result{}, fmt.Errorf("sign: pushing %s: %w", req.To.Image, err)
	}
	s.log.From(ctx).Info("pushed signed image", "image", req.To.Image, "digest", digest, "modules", len(signed.Paths))
	return Result{Digest: digest, Signed: signed.Paths}, nil
}

// MaxModuleSize is the largest file SignImage signs, as its tar header
// gives it: the limit depmod and the loader apply to a module
// (modfile.DefaultMaxSize).
const MaxModuleSize = modfile.DefaultMaxSize

// Signed is an image with signed modules. The signed files are kept in a
// temporary directory until Close.
type Signed struct {
	Image v1.Image
	Paths []string
	dir   string
}

// Close removes the signed files; Image cannot be read after it.
func (s Signed) Close() error {
	if s.dir == "" {
		return nil
	}
	return os.RemoveAll(s.dir)
}

// spooled is a signed module kept on disk.
type spooled struct {
	hdr  tar.Header
	path string
}

// SignImage signs the files of img that match globs and returns img with
// one more layer that holds the signed files. A glob that matches no file
// is an error naming it, as in KMM (whose sign pod fails then). Memory
// stays flat whatever the image holds: each module is streamed from the
// image through the hash into a temporary file (so the disk holds the
// signed modules once), a module over MaxModuleSize is refused by its
// header before it is read, and the layer is streamed from those files
// each time it is read. Call Close on the result when done with it.
func SignImage(img v1.Image, globs []string, signer *signfile.Signer) (_ Signed, err error) {
	for _, g := range globs {
		if !path.IsAbs(g) {
			return Signed{}, fmt.Errorf("filesToSign entry %q is not an absolute path", g)
		}
		if _, err := path.Match(g, ""); err != nil {
			return Signed{}, fmt.Errorf("filesToSign entry %q: %w", g, err)
		}
	}
	dir, err := os.MkdirTemp("", "kmmkit-sign")
	if err != nil {
		return Signed{}, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	matched := make([]bool, len(globs))
	var files []spooled
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Signed{}, fmt.Errorf("reading the image: %w", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		p := path.Clean("/" + hdr.Name)
		hit := false
		for i, g := range globs {
			if ok, _ := path.Match(g, p); ok {
				matched[i], hit = true, true
			}
		}
		if !hit {
			continue
		}
		if hdr.Size > MaxModuleSize {
			return Signed{}, fmt.Errorf("signing %s: %d bytes, over the limit of %d bytes for a module", p, hdr.Size, int64(MaxModuleSize))
		}
		f, err := os.CreateTemp(dir, "module")
		if err != nil {
			return Signed{}, err
		}
		n, err := signer.SignTo(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return Signed{}, fmt.Errorf("signing %s: %w", p, err)
		}
		h := *hdr
		h.Name, h.Size = strings.TrimPrefix(p, "/"), n
		files = append(files, spooled{hdr: h, path: f.Name()})
	}
	for i, g := range globs {
		if !matched[i] {
			return Signed{}, fmt.Errorf("filesToSign entry %q matches no file in the image", g)
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].hdr.Name < files[j].hdr.Name })
	var paths []string
	for _, f := range files {
		paths = append(paths, "/"+f.hdr.Name)
	}
	mt := types.DockerLayer
	if m, err := img.MediaType(); err == nil && m == types.OCIManifestSchema1 {
		mt = types.OCILayer
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(writeLayer(pw, files)) }()
		return pr, nil
	}, tarball.WithMediaType(mt))
	if err != nil {
		return Signed{}, err
	}
	out, err := mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Author: "kmmkit", Created: v1.Time{Time: time.Unix(0, 0)},
		CreatedBy: fmt.Sprintf("kmmkit sign: %d module(s)", len(paths)),
	}})
	if err != nil {
		return Signed{}, err
	}
	return Signed{Image: out, Paths: paths, dir: dir}, nil
}

// writeLayer writes the tar of the signed modules from their files.
func writeLayer(w io.Writer, files []spooled) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: f.hdr.Name, Size: f.hdr.Size, Mode: f.hdr.Mode,
			Uid: f.hdr.Uid, Gid: f.hdr.Gid, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		src, err := os.Open(f.path)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

// IntermediateTag returns where a build that is still to be signed pushes
// its unsigned image: the final image's repository, with the tag
// "<tag>-kmmkit-unsigned" (or "<digest hex prefix>-kmmkit-unsigned" for a
// digest reference), so unsigned modules never appear at the final tag.
func IntermediateTag(image string) (string, error) {
	return ociimage.SiblingTag(image, "-kmmkit-unsigned")
}

// KeysFromSecrets reads the signing key and certificate of a Module's sign
// section: the "key" entry of keySecret and the "cert" entry of
// certSecret, as KMM does.
func KeysFromSecrets(ctx context.Context, client kubernetes.Interface, namespace string, s *v1beta1.Sign) (key, cert []byte, err error) {
	if s == nil || s.KeySecret == nil || s.CertSecret == nil {
		return nil, nil, errors.New("sign: keySecret and certSecret are required")
	}
	get := func(ref *corev1.LocalObjectReference, entry, field string) ([]byte, error) {
		sec, err := client.CoreV1().Secrets(namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("sign.%s %s/%s: %w", field, namespace, ref.Name, err)
		}
		v, ok := sec.Data[entry]
		if !ok || len(v) == 0 {
			return nil, fmt.Errorf("sign.%s %s/%s has no %q entry", field, namespace, ref.Name, entry)
		}
		return v, nil
	}
	if key, err = get(s.KeySecret, KeySecretKey, "keySecret"); err != nil {
		return nil, nil, err
	}
	if cert, err = get(s.CertSecret, CertSecretKey, "certSecret"); err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}
