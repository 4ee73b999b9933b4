// Package kmodtest gives the tests of the packages that read kmod images
// (lint, preflight, cmd/kmm) the real components they share: the plain
// docker-registry and Debian's kernel tree (package testenv), and
// Debian's modules as files of an image to assemble.
package kmodtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kmmkit/kmmkit/builder/assemble"
	"github.com/kmmkit/kmmkit/internal/testenv"
	"github.com/kmmkit/kmmkit/registry"
)

// Env is the real plain registry and Debian's kernel tree.
type Env struct {
	// Client is a registry client with the defaults.
	Client *registry.Client
	// Host is the plain registry's host:port.
	Host string
	// Root is Debian's unpacked linux-image package, and Kernel its
	// kernel version.
	Root, Kernel string
}

// New returns the environment; without it the test skips, or fails
// under KMMKIT_INTEGRATION=1 (package testenv).
func New(t testing.TB) *Env {
	t.Helper()
	root, kver := testenv.KernelTree(t)
	regs := testenv.Registry(t)
	client, err := registry.NewClient()
	if err != nil {
		t.Fatalf("registry client: %v", err)
	}
	return &Env{Client: client, Host: regs.Plain, Root: root, Kernel: kver}
}

// Modules reads Debian's modules at paths (relative to
// lib/modules/<kernel>, such as "kernel/crypto/xor.ko") as files of an
// image's module directory, keeping their paths.
func (e *Env) Modules(t testing.TB, paths ...string) []assemble.File {
	t.Helper()
	out := make([]assemble.File, 0, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(filepath.Join(e.Root, "lib", "modules", e.Kernel, filepath.FromSlash(p)))
		if err != nil {
			t.Fatalf("Debian module: %v", err)
		}
		out = append(out, assemble.File{Path: p, Data: data})
	}
	return out
}

// SigningKey returns a fresh RSA key and its self-signed certificate of
// that serial number (the signature's key id, as modinfo's sig_key prints
// it) and common name, in PEM, as a Module's sign secrets hold them.
func SigningKey(t testing.TB, serial int64, commonName string) (key, cert []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("signing key: %v", err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: commonName},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatalf("signing certificate: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
