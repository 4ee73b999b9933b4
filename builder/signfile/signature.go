package signfile

import (
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// ErrNotSigned says a module carries no appended signature.
var ErrNotSigned = errors.New("module is not signed")

// Signature describes the signature appended to a module, as modinfo
// shows it (sig_id, signer, sig_key, sig_hashalgo).
type Signature struct {
	// ID is the kind of signature: "PKCS#7" for what sign-file makes.
	ID string
	// Signer is the common name of the signing certificate's issuer
	// (modinfo's signer); empty when the signer is named by its subject
	// key identifier.
	Signer string
	// KeyID identifies the signing key (modinfo's sig_key): the
	// certificate's serial number when the signer is named by issuer and
	// serial number (sign-file's default), else its subject key
	// identifier; upper-case hex bytes joined by colons.
	KeyID string
	// Hash is the digest algorithm, as sign-file names it ("sha256").
	Hash string
}

// hashNames are sign-file's names of the digest algorithms.
var hashNames = map[crypto.Hash]string{
	crypto.SHA1: "sha1", crypto.SHA224: "sha224", crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512",
}

// module_signature id_type values (include/linux/module_signature.h).
var signatureIDs = map[byte]string{0: "PGP", 1: "X509", pkeyIDPKCS7: "PKCS#7"}

// ParseSignature reads the signature appended to a module's ELF bytes (a
// compressed module is signed before it is compressed: pass its
// decompressed bytes): the module_signature trailer and the PKCS#7
// signer it holds. A module without the marker is ErrNotSigned; a damaged
// trailer or signature is an error saying what is wrong.
func ParseSignature(module []byte) (*Signature, error) {
	if !Signed(module) {
		return nil, ErrNotSigned
	}
	end := len(module) - len(Marker)
	if end < 12 {
		return nil, errors.New("signature trailer truncated")
	}
	trailer := module[end-12 : end]
	idType := trailer[2]
	sigLen := int64(binary.BigEndian.Uint32(trailer[8:]))
	if sigLen == 0 || sigLen > int64(end-12) {
		return nil, fmt.Errorf("signature trailer gives a signature of %d bytes in a module of %d", sigLen, len(module))
	}
	id, ok := signatureIDs[idType]
	if !ok {
		return nil, fmt.Errorf("unknown signature type %d", idType)
	}
	if idType != pkeyIDPKCS7 {
		return nil, fmt.Errorf("%s signatures are not supported (sign-file makes PKCS#7)", id)
	}
	sig := &Signature{ID: id}
	if err := sig.parsePKCS7(module[int64(end-12)-sigLen : end-12]); err != nil {
		return nil, fmt.Errorf("PKCS#7 signature: %w", err)
	}
	return sig, nil
}

type p7ContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type p7SignedData struct {
	Version          int
	DigestAlgorithms asn1.RawValue
	ContentInfo      asn1.RawValue
	Certificates     asn1.RawValue  `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue  `asn1:"optional,tag:1"`
	SignerInfos      []p7SignerInfo `asn1:"set"`
}

type p7SignerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	AuthAttributes     asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnauthAttributes   asn1.RawValue `asn1:"optional,tag:1"`
}

type p7IssuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

// parsePKCS7 fills the signer and hash from a PKCS#7 SignedData.
func (s *Signature) parsePKCS7(der []byte) error {
	var ci p7ContentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil {
		return err
	} else if len(rest) > 0 {
		return fmt.Errorf("%d bytes after the signature", len(rest))
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return fmt.Errorf("content type %v is not signedData", ci.ContentType)
	}
	var sd p7SignedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return fmt.Errorf("signedData: %w", err)
	}
	if len(sd.SignerInfos) != 1 {
		return fmt.Errorf("%d signers, want 1", len(sd.SignerInfos))
	}
	si := sd.SignerInfos[0]
	for h, oid := range hashOIDs {
		if si.DigestAlgorithm.Algorithm.Equal(oid) {
			s.Hash = hashNames[h]
		}
	}
	if s.Hash == "" {
		s.Hash = si.DigestAlgorithm.Algorithm.String()
	}
	switch {
	case si.SID.Class == asn1.ClassUniversal && si.SID.Tag == asn1.TagSequence:
		var ias p7IssuerAndSerial
		if _, err := asn1.Unmarshal(si.SID.FullBytes, &ias); err != nil {
			return fmt.Errorf("signer's issuer and serial number: %w", err)
		}
		var rdn pkix.RDNSequence
		if _, err := asn1.Unmarshal(ias.Issuer.FullBytes, &rdn); err != nil {
			return fmt.Errorf("signer's issuer: %w", err)
		}
		var name pkix.Name
		name.FillFromRDNSequence(&rdn)
		s.Signer, s.KeyID = name.CommonName, hexID(ias.Serial.Bytes())
	case si.SID.Class == asn1.ClassContextSpecific && si.SID.Tag == 0:
		s.KeyID = hexID(si.SID.Bytes)
	default:
		return fmt.Errorf("signer identifier of class %d, tag %d", si.SID.Class, si.SID.Tag)
	}
	return nil
}

// hexID formats a key identifier as modinfo does: "5E:E1:13".
func hexID(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(parts, ":")
}
