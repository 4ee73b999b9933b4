package signfile

import (
	"bytes"
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/bombtest"
	"github.com/kmmkit/kmmkit/internal/elftest"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// kernelSignFile finds the kernel's sign-file (Debian's linux-kbuild).
func kernelSignFile(t *testing.T) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/linux-kbuild-*/scripts/sign-file")
	testenv.Need(t, "the kernel's sign-file", len(matches) > 0, "apt-get install linux-kbuild-6.1 (comes with linux-headers)")
	return matches[0]
}

// keyPair makes a self-signed signing key with openssl, as the kernel's
// build does: kind is "rsa:2048", "rsa:4096" or "ec".
func keyPair(t *testing.T, kind string) (key, certPEM, certDER string) {
	t.Helper()
	openssl := testenv.LookPath(t, "openssl", "apt-get install openssl")
	dir := t.TempDir()
	key, certPEM, certDER = filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "cert.der")
	args := []string{"req", "-new", "-nodes", "-utf8", "-sha256", "-days", "3650", "-batch", "-x509",
		"-subj", "/CN=kmmkit module signing/O=kmmkit", "-outform", "PEM", "-out", certPEM, "-keyout", key}
	if kind == "ec" {
		args = append(args, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")
	} else {
		args = append(args, "-newkey", kind)
	}
	out, err := exec.Command(openssl, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	out, err = exec.Command(openssl, "x509", "-in", certPEM, "-outform", "DER", "-out", certDER).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return key, certPEM, certDER
}

// modules returns unsigned module files to sign.
func modules(t *testing.T) map[string][]byte {
	t.Helper()
	mods := map[string][]byte{
		"synthetic.ko": elftest.Module{Modinfo: []string{"license=GPL", "vermagic=6.1.0-56-amd64 SMP"}}.Bytes(),
	}
	if root := os.Getenv(testenv.KernelTreeEnv); root != "" {
		_, kver := testenv.KernelTree(t)
		for _, p := range []string{"kernel/lib/crc7.ko", "kernel/fs/ext4/ext4.ko"} {
			data, err := os.ReadFile(filepath.Join(root, "lib", "modules", kver, p))
			require.NoError(t, err)
			mods[filepath.Base(p)] = Unsigned(data)
		}
	}
	return mods
}

// TestByteIdenticalToSignFile signs modules with the kernel's sign-file
// and with ours, for RSA keys and each hash, with PEM and DER
// certificates, and compares the files.
func TestByteIdenticalToSignFile(t *testing.T) {
	signFile := kernelSignFile(t)
	mods := modules(t)
	for _, kind := range []string{"rsa:2048", "rsa:4096"} {
		key, certPEM, certDER := keyPair(t, kind)
		for _, hashName := range []string{"sha256", "sha384", "sha512"} {
			for _, cert := range []string{certPEM, certDER} {
				hash, err := ParseHash(hashName)
				require.NoError(t, err)
				signer, err := LoadSigner(hash, key, cert)
				require.NoError(t, err)
				for name, data := range mods {
					dir := t.TempDir()
					in := filepath.Join(dir, name)
					require.NoError(t, os.WriteFile(in, data, 0o644))
					want := filepath.Join(dir, "want.ko")
					out, err := exec.Command(signFile, hashName, key, cert, in, want).CombinedOutput()
					require.NoError(t, err, "%s", out)
					wantData, err := os.ReadFile(want)
					require.NoError(t, err)
					got, err := signer.Sign(data)
					require.NoError(t, err)
					require.True(t, bytes.Equal(wantData, got), "%s %s %s %s: output differs from sign-file", kind, hashName, filepath.Ext(cert), name)
					assert.Equal(t, data, Unsigned(got))
					// The streaming paths write the same bytes.
					ours := filepath.Join(dir, "ours.ko")
					require.NoError(t, signer.SignFile(in, ours))
					gotFile, err := os.ReadFile(ours)
					require.NoError(t, err)
					require.True(t, bytes.Equal(wantData, gotFile), "%s %s %s %s: SignFile differs from sign-file", kind, hashName, filepath.Ext(cert), name)
					var buf bytes.Buffer
					n, err := signer.SignTo(&buf, bytes.NewReader(data))
					require.NoError(t, err)
					assert.Equal(t, int64(len(wantData)), n)
					require.True(t, bytes.Equal(wantData, buf.Bytes()), "SignTo differs from sign-file")
				}
			}
		}
	}
}

// TestECDSAVerifiesWithOpenSSL signs with an ECDSA key (randomised, so
// never byte-identical) and verifies the signature with openssl cms.
func TestECDSAVerifiesWithOpenSSL(t *testing.T) {
	openssl := testenv.LookPath(t, "openssl", "apt-get install openssl")
	for _, kind := range []string{"ec", "rsa:2048"} {
		key, certPEM, _ := keyPair(t, kind)
		signer, err := LoadSigner(crypto.SHA256, key, certPEM)
		require.NoError(t, err)
		module := modules(t)["synthetic.ko"]
		sig, err := signer.Signature(module)
		require.NoError(t, err)
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "sig.der"), sig, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "mod.ko"), module, 0o644))
		out, err := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", filepath.Join(dir, "sig.der"),
			"-content", filepath.Join(dir, "mod.ko"), "-certfile", certPEM, "-noverify", "-out", os.DevNull).CombinedOutput()
		require.NoError(t, err, "%s: %s", kind, out)
		assert.Contains(t, string(out), "Verification successful")

		tampered := append([]byte(nil), module...)
		tampered[len(tampered)/2] ^= 0xff
		require.NoError(t, os.WriteFile(filepath.Join(dir, "mod.ko"), tampered, 0o644))
		_, err = exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", filepath.Join(dir, "sig.der"),
			"-content", filepath.Join(dir, "mod.ko"), "-certfile", certPEM, "-noverify", "-out", os.DevNull).CombinedOutput()
		assert.Error(t, err, "a changed module must not verify")
	}
}

func TestSignerErrors(t *testing.T) {
	_, err := ParseHash("md5")
	assert.ErrorContains(t, err, `unsupported hash algorithm "md5"`)
	key1, cert1, _ := keyPair(t, "rsa:2048")
	_, cert2, _ := keyPair(t, "rsa:2048")
	_, err = LoadSigner(crypto.SHA256, key1, cert2)
	assert.ErrorContains(t, err, "the certificate does not match the private key")
	_, err = LoadSigner(crypto.SHA256, cert1, cert1)
	assert.ErrorContains(t, err, "no PEM private key found")
	_, err = LoadSigner(crypto.SHA256, key1, key1)
	assert.Error(t, err)

	s, err := LoadSigner(crypto.SHA256, key1, cert1)
	require.NoError(t, err)
	dir := t.TempDir()
	in := filepath.Join(dir, "m.ko")
	require.NoError(t, os.WriteFile(in, []byte("module"), 0o640))
	require.NoError(t, s.SignFile(in, ""))
	data, err := os.ReadFile(in)
	require.NoError(t, err)
	assert.True(t, Signed(data))
	assert.Equal(t, []byte("module"), Unsigned(data))
	st, _ := os.Stat(in)
	assert.Equal(t, os.FileMode(0o640), st.Mode().Perm())
	assert.Equal(t, []byte("x"), Unsigned([]byte("x")))
}

// TestSignFileStreams signs a 256 MiB module (a sparse file) and checks
// that memory stays flat: the peak resident set grows by far less than the
// module, since the module is hashed as it is copied, never held. The
// output is the module followed by the signature of its digest.
func TestSignFileStreams(t *testing.T) {
	key, cert, _ := keyPair(t, "rsa:2048")
	signer, err := LoadSigner(crypto.SHA256, key, cert)
	require.NoError(t, err)
	dir := t.TempDir()
	in, out := filepath.Join(dir, "big.ko"), filepath.Join(dir, "big-signed.ko")
	const size = 256 << 20
	head := elftest.Module{Modinfo: []string{"license=GPL"}}.Bytes()
	bombtest.Sparse(t, in, size, head)
	rss, ok := bombtest.PeakRSS(func() { err = signer.SignFile(in, out) })
	require.NoError(t, err)
	if ok {
		assert.Less(t, rss, uint64(32<<20), "peak RSS grew by %d bytes for a %d-byte module", rss, size)
	}
	f, err := os.Open(in)
	require.NoError(t, err)
	defer f.Close()
	sig, err := signer.SignatureFrom(f)
	require.NoError(t, err)
	st, err := os.Stat(out)
	require.NoError(t, err)
	tail := Appendix(sig)
	assert.Equal(t, int64(size+len(tail)), st.Size())
	g, err := os.Open(out)
	require.NoError(t, err)
	defer g.Close()
	got := make([]byte, len(tail))
	_, err = g.ReadAt(got, size)
	require.NoError(t, err)
	assert.Equal(t, tail, got)
	gotHead := make([]byte, len(head))
	_, err = g.ReadAt(gotHead, 0)
	require.NoError(t, err)
	assert.Equal(t, head, gotHead)

	// A source that cannot be signed leaves the destination untouched.
	require.NoError(t, os.WriteFile(out, []byte("previous"), 0o644))
	assert.ErrorContains(t, signer.SignFile(dir, out), "not a regular file")
	prev, _ := os.ReadFile(out)
	assert.Equal(t, "previous", string(prev))
}
