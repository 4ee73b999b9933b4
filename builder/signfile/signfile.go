// Package signfile signs Linux kernel modules the way the kernel's
// scripts/sign-file does: it appends a detached PKCS#7 (CMS) signature
// over the whole file, the module_signature trailer and the
// "~Module signature appended~\n" marker. For RSA keys the output is
// byte-identical to sign-file's (PKCS#1 v1.5 signatures are
// deterministic); ECDSA signatures are valid but, being randomised, never
// identical twice.
package signfile

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"

	"github.com/kmmkit/kmmkit/internal/atomicfile"
)

// Marker ends every signed module.
const Marker = "~Module signature appended~\n"

// pkeyIDPKCS7 is the module_signature id_type of a PKCS#7 signature.
const pkeyIDPKCS7 = 2

var (
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidRSA        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	hashOIDs      = map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA1:   {1, 3, 14, 3, 2, 26},
		crypto.SHA224: {2, 16, 840, 1, 101, 3, 4, 2, 4},
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	}
	ecdsaOIDs = map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA224: {1, 2, 840, 10045, 4, 3, 1},
		crypto.SHA256: {1, 2, 840, 10045, 4, 3, 2},
		crypto.SHA384: {1, 2, 840, 10045, 4, 3, 3},
		crypto.SHA512: {1, 2, 840, 10045, 4, 3, 4},
	}
)

// ParseHash maps sign-file's hash names (sha1, sha224, sha256, sha384,
// sha512) to a crypto.Hash.
func ParseHash(name string) (crypto.Hash, error) {
	switch name {
	case "sha1":
		return crypto.SHA1, nil
	case "sha224":
		return crypto.SHA224, nil
	case "sha256":
		return crypto.SHA256, nil
	case "sha384":
		return crypto.SHA384, nil
	case "sha512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("unsupported hash algorithm %q: use sha256, sha384 or sha512", name)
}

// Signer signs modules with one key and certificate. It is safe for
// concurrent use.
type Signer struct {
	hash crypto.Hash
	key  crypto.Signer
	cert *x509.Certificate
}

// NewSigner returns a Signer for a private key and its certificate.
func NewSigner(hash crypto.Hash, key crypto.Signer, cert *x509.Certificate) (*Signer, error) {
	if _, ok := hashOIDs[hash]; !ok {
		return nil, fmt.Errorf("unsupported hash %v", hash)
	}
	switch k := key.Public().(type) {
	case *rsa.PublicKey:
		if cp, ok := cert.PublicKey.(*rsa.PublicKey); !ok || !cp.Equal(k) {
			return nil, errors.New("the certificate does not match the private key")
		}
	case *ecdsa.PublicKey:
		if cp, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !cp.Equal(k) {
			return nil, errors.New("the certificate does not match the private key")
		}
		if _, ok := ecdsaOIDs[hash]; !ok {
			return nil, fmt.Errorf("hash %v cannot be used with an ECDSA key", hash)
		}
	default:
		return nil, fmt.Errorf("unsupported key type %T: use RSA or ECDSA", k)
	}
	return &Signer{hash: hash, key: key, cert: cert}, nil
}

// LoadSigner reads a private key (PEM: PKCS#1, PKCS#8 or SEC 1) and a
// certificate (PEM or DER) from files; like sign-file, the key file may
// hold the certificate too.
func LoadSigner(hash crypto.Hash, keyFile, certFile string) (*Signer, error) {
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	certData, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	cert, err := parseCert(certData)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	s, err := NewSigner(hash, key, cert)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", keyFile, certFile, err)
	}
	return s, nil
}

// ParseSigner is LoadSigner for key and certificate bytes, such as the
// "key" and "cert" entries of a Module's sign secrets.
func ParseSigner(hash crypto.Hash, keyPEM, cert []byte) (*Signer, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	c, err := parseCert(cert)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	return NewSigner(hash, key, c)
}

// parseKey reads the first private key block of a PEM file.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported key type %T", k)
			}
			return s, nil
		}
	}
}

// parseCert reads a PEM or DER certificate.
func parseCert(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
	return x509.ParseCertificate(data)
}

// algorithmIdentifier is an AlgorithmIdentifier; Params is left out when
// empty, as OpenSSL writes digest algorithms.
type algorithmIdentifier struct {
	Algorithm asn1.ObjectIdentifier
	Params    asn1.RawValue `asn1:"optional"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type signerInfo struct {
	Version            int
	SID                issuerAndSerial
	DigestAlgorithm    algorithmIdentifier
	SignatureAlgorithm algorithmIdentifier
	Signature          []byte
}

type encapContent struct {
	ContentType asn1.ObjectIdentifier
}

type signedData struct {
	Version          int
	DigestAlgorithms []algorithmIdentifier `asn1:"set"`
	EncapContentInfo encapContent
	SignerInfos      []signerInfo `asn1:"set"`
}

type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     signedData `asn1:"explicit,tag:0"`
}

// Signature returns the detached PKCS#7 signature of module, as sign-file
// makes it: no signed attributes, no certificates, the signer named by
// issuer and serial number.
func (s *Signer) Signature(module []byte) ([]byte, error) {
	return s.SignatureFrom(bytes.NewReader(module))
}

// SignatureFrom is Signature for a module read from r to its end. The
// module is only hashed, never held: the signature needs its digest alone.
func (s *Signer) SignatureFrom(r io.Reader) ([]byte, error) {
	h := s.hash.New()
	if _, err := io.Copy(h, r); err != nil {
		return nil, fmt.Errorf("reading the module: %w", err)
	}
	return s.signDigest(h.Sum(nil))
}

// signDigest makes the PKCS#7 signature of a module's digest.
func (s *Signer) signDigest(digest []byte) ([]byte, error) {
	sig, err := s.key.Sign(rand.Reader, digest, s.hash)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	sigAlg := algorithmIdentifier{Algorithm: oidRSA, Params: asn1.NullRawValue}
	if _, ok := s.key.Public().(*ecdsa.PublicKey); ok {
		sigAlg = algorithmIdentifier{Algorithm: ecdsaOIDs[s.hash]}
	}
	digestAlg := algorithmIdentifier{Algorithm: hashOIDs[s.hash]}
	ci := contentInfo{
		ContentType: oidSignedData,
		Content: signedData{
			Version:          1,
			DigestAlgorithms: []algorithmIdentifier{digestAlg},
			EncapContentInfo: encapContent{ContentType: oidData},
			SignerInfos: []signerInfo{{
				Version:            1,
				SID:                issuerAndSerial{Issuer: asn1.RawValue{FullBytes: s.cert.RawIssuer}, Serial: s.cert.SerialNumber},
				DigestAlgorithm:    digestAlg,
				SignatureAlgorithm: sigAlg,
				Signature:          sig,
			}},
		},
	}
	return asn1.Marshal(ci)
}

// Sign returns module with its signature, trailer and marker appended.
// Like sign-file, it signs the whole file as given, even one that is
// already signed.
func (s *Signer) Sign(module []byte) ([]byte, error) {
	sig, err := s.Signature(module)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(module)+len(sig)+12+len(Marker))
	out = append(out, module...)
	return append(out, Appendix(sig)...), nil
}

// Appendix is what sign-file appends to a module after signing it: the
// signature, the module_signature trailer naming it PKCS#7 with its
// length, and the marker.
func Appendix(sig []byte) []byte {
	out := make([]byte, 0, len(sig)+12+len(Marker))
	out = append(out, sig...)
	var trailer [12]byte
	trailer[2] = pkeyIDPKCS7
	binary.BigEndian.PutUint32(trailer[8:], uint32(len(sig)))
	out = append(out, trailer[:]...)
	return append(out, Marker...)
}

// SignTo copies the module read from r to w and appends its signature,
// trailer and marker, hashing the module as it passes: the output is
// Sign's, in constant memory whatever the module's size. It returns the
// bytes written.
func (s *Signer) SignTo(w io.Writer, r io.Reader) (int64, error) {
	h := s.hash.New()
	n, err := io.Copy(io.MultiWriter(w, h), r)
	if err != nil {
		return n, fmt.Errorf("copying the module: %w", err)
	}
	sig, err := s.signDigest(h.Sum(nil))
	if err != nil {
		return n, err
	}
	m, err := w.Write(Appendix(sig))
	return n + int64(m), err
}

// SignFile signs the module at path, writing dest (path itself when dest
// is "") through a temporary file and a rename. The module is streamed,
// never read whole.
func (s *Signer) SignFile(path, dest string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if dest == "" {
		dest = path
	}
	return atomicfile.Write(dest, st.Mode().Perm(), func(w io.Writer) error {
		if _, err := s.SignTo(w, f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return nil
	})
}

// Signed reports whether module ends with a signature marker.
func Signed(module []byte) bool { return bytes.HasSuffix(module, []byte(Marker)) }

// Unsigned returns module without its last appended signature, or module
// itself when it has none or the trailer is damaged.
func Unsigned(module []byte) []byte {
	if !Signed(module) || len(module) < len(Marker)+12 {
		return module
	}
	end := len(module) - len(Marker)
	sigLen := int(binary.BigEndian.Uint32(module[end-4 : end]))
	start := end - 12 - sigLen
	if sigLen <= 0 || start < 0 {
		return module
	}
	return module[:start]
}
