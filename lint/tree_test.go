package lint

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/builder/signfile"
	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/internal/elftest"
)

const (
	kver  = "6.1.0-57-amd64"
	flags = " SMP preempt mod_unload modversions "
	vm    = kver + flags
)

// mod returns a synthetic module of kernel kver with extra .modinfo.
func mod(exports []string, needs []string, info ...string) []byte {
	m := elftest.Module{Modinfo: append([]string{"license=GPL", "vermagic=" + vm}, info...)}
	for i, e := range exports {
		m.Exports = append(m.Exports, elftest.Export{Name: e, CRC: uint32(0x1000 + i)})
	}
	for i, n := range needs {
		m.Needs = append(m.Needs, elftest.Need{Name: n})
		m.Versions = append(m.Versions, elftest.Version{Name: n, CRC: uint64(0x1000 + i)})
	}
	return m.Bytes()
}

// tree writes files (paths relative to root) and returns root.
func tree(t *testing.T, files map[string][]byte) string {
	t.Helper()
	root := t.TempDir()
	for p, data := range files {
		full := filepath.Join(root, filepath.FromSlash(p))
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, data, 0o644))
	}
	return root
}

// indexTree runs depmod on root's <dir>/lib/modules/kver, as a build does.
func indexTree(t *testing.T, root, dir string) {
	t.Helper()
	_, err := depmod.Run(context.Background(), depmod.Options{BaseDir: filepath.Join(root, dir), KernelVersion: kver, ConfigPaths: []string{}})
	require.NoError(t, err)
}

// pair is a good module tree: nic needs nic_core's symbol.
func pair() map[string][]byte {
	return map[string][]byte{
		"opt/lib/modules/" + kver + "/extra/nic.ko":      mod(nil, []string{"nic_core_hello"}, "depends=nic_core", "alias=pci:v00001234d*"),
		"opt/lib/modules/" + kver + "/extra/nic_core.ko": mod([]string{"nic_core_hello"}, nil),
	}
}

func lintOf(t *testing.T, root string, opts ...Option) *Report {
	t.Helper()
	rep, err := Tree(context.Background(), root, kver, opts...)
	require.NoError(t, err)
	return rep
}

// findings renders the findings as "FILE: RULE" lines.
func findings(rep *Report) []string {
	out := []string{}
	for _, f := range rep.Findings {
		out = append(out, f.File+": "+string(f.Rule))
	}
	return out
}

func TestGoodTree(t *testing.T) {
	root := tree(t, pair())
	indexTree(t, root, "opt")
	rep := lintOf(t, root, WithModules("nic"), WithVermagic(vm))
	assert.Empty(t, rep.Findings)
	assert.True(t, rep.OK())
	require.Len(t, rep.Modules, 2)
	assert.Equal(t, "/opt/lib/modules/"+kver+"/extra/nic.ko", rep.Modules[0].Path)
	assert.Equal(t, []string{"nic_core"}, rep.Modules[0].Depends)
	assert.Equal(t, "/opt/lib/modules/"+kver, rep.ModuleDir)
	assert.Contains(t, rep.Summary(3), "2 module(s)")

	// An alias names the module too.
	assert.Empty(t, lintOf(t, root, WithModules("pci:v00001234d00005678")).Findings)
}

func TestWrongPrefix(t *testing.T) {
	files := map[string][]byte{}
	for p, data := range pair() {
		files[strings.TrimPrefix(p, "opt/")] = data
	}
	root := tree(t, files)
	indexTree(t, root, "")
	rep := lintOf(t, root)
	require.Equal(t, []string{"/opt/lib/modules/" + kver + ": layout"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "does not exist; the image has its modules elsewhere: 2 under /lib/modules/"+kver+
		" (another prefix: set modprobe.dirName to /, or move them to /opt/lib/modules/"+kver+")")

	// The same tree with the right dirName is good.
	assert.Empty(t, lintOf(t, root, WithDirName("/")).Findings)
}

func TestKernelDirectoryOfAnotherKernel(t *testing.T) {
	root := tree(t, map[string][]byte{"opt/lib/modules/6.1.0-55-amd64/nic.ko": mod(nil, nil)})
	rep := lintOf(t, root)
	require.Len(t, rep.Findings, 1)
	assert.Contains(t, rep.Findings[0].Message, "1 under /opt/lib/modules/6.1.0-55-amd64 (a directory for kernel 6.1.0-55-amd64: is the image built for "+kver+"? check the kernel mapping)")

	empty := lintOf(t, t.TempDir())
	assert.Contains(t, empty.Findings[0].Message, "does not exist, and the image has no module under /opt, /lib/modules, /usr/lib/modules")
}

func TestModulesOfAnotherKernel(t *testing.T) {
	files := pair()
	files["opt/lib/modules/"+kver+"/extra/old.ko"] = elftest.Module{Modinfo: []string{"vermagic=6.1.0-55-amd64" + flags}}.Bytes()
	files["opt/lib/modules/"+kver+"/extra/none.ko"] = elftest.Module{Modinfo: []string{"license=GPL"}}.Bytes()
	files["opt/lib/modules/"+kver+"/extra/junk.ko"] = []byte("not a module at all")
	root := tree(t, files)
	indexTree(t, root, "opt")
	rep := lintOf(t, root)
	assert.Equal(t, []string{
		"/opt/lib/modules/" + kver + "/extra/junk.ko: unreadable",
		"/opt/lib/modules/" + kver + "/extra/none.ko: vermagic-release",
		"/opt/lib/modules/" + kver + "/extra/old.ko: vermagic-release",
	}, findings(rep))
	assert.Contains(t, rep.Findings[2].Message, "built for kernel 6.1.0-55-amd64")
	assert.Contains(t, rep.Findings[2].Message, "the kernel "+kver+" refuses it")
	assert.Contains(t, rep.Findings[1].Message, "has no vermagic")
}

func TestDepmodFiles(t *testing.T) {
	dir := "/opt/lib/modules/" + kver
	root := tree(t, pair())
	rep := lintOf(t, root)
	assert.Equal(t, []string{dir + "/modules.dep: depmod-missing", dir + "/modules.dep.bin: depmod-missing"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "run depmod -b /opt "+kver)

	indexTree(t, root, "opt")
	require.Empty(t, lintOf(t, root).Findings)
	// A module added after depmod ran: every index that names it is stale.
	require.NoError(t, os.WriteFile(filepath.Join(root, "opt/lib/modules", kver, "extra/late.ko"), mod([]string{"late_fn"}, nil, "alias=late-alias"), 0o644))
	rep = lintOf(t, root)
	assert.Equal(t, []string{dir + "/modules.alias: depmod-stale", dir + "/modules.alias.bin: depmod-stale", dir + "/modules.dep: depmod-stale",
		dir + "/modules.dep.bin: depmod-stale", dir + "/modules.symbols: depmod-stale", dir + "/modules.symbols.bin: depmod-stale"}, findings(rep))
	assert.Contains(t, rep.Findings[2].Message, `it lacks "extra/late.ko:"`)

	// Only modules.alias removed.
	indexTree(t, root, "opt")
	require.NoError(t, os.Remove(filepath.Join(root, "opt/lib/modules", kver, "modules.alias")))
	rep = lintOf(t, root)
	require.Equal(t, []string{dir + ": depmod-missing"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "depmod's modules.alias are missing")
}

func TestVermagicFlags(t *testing.T) {
	files := pair()
	files["opt/lib/modules/"+kver+"/extra/odd.ko"] = elftest.Module{Modinfo: []string{"vermagic=" + kver + " SMP mod_unload modversions "}}.Bytes()
	root := tree(t, files)
	indexTree(t, root, "opt")
	// Without a reference, the odd one out.
	rep := lintOf(t, root)
	require.Equal(t, []string{"/opt/lib/modules/" + kver + "/extra/odd.ko: vermagic-flags"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "differ from those of 2 other module(s)")
	assert.Contains(t, rep.Findings[0].Message, "the module lacks preempt")

	// Against the kernel's: all three differ from a kernel without modversions.
	rep = lintOf(t, root, WithVermagic(kver+" SMP preempt mod_unload "))
	assert.Len(t, rep.Findings, 3)
	assert.Contains(t, rep.Findings[0].Message, "the module has modversions, the kernel does not")

	_, err := Tree(context.Background(), root, kver, WithVermagic("6.1.0-1-amd64 SMP"))
	assert.ErrorContains(t, err, `reference vermagic "6.1.0-1-amd64 SMP" is of kernel "6.1.0-1-amd64", not "`+kver+`"`)
}

func TestDependencies(t *testing.T) {
	dir := "/opt/lib/modules/" + kver
	files := pair()
	files["opt/lib/modules/"+kver+"/extra/ext.ko"] = mod(nil, []string{"tls_hello"}, "depends=tls")
	root := tree(t, files)
	indexTree(t, root, "opt")
	rep := lintOf(t, root)
	require.Equal(t, []string{dir + "/extra/ext.ko: dependency"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "needs module tls (.modinfo depends), which the image does not hold")
	assert.Empty(t, lintOf(t, root, WithHostModules("tls")).Findings, "declared as the node's")

	// A dependency the image holds, whose symbol versions differ.
	files = pair()
	files["opt/lib/modules/"+kver+"/extra/nic_core.ko"] = elftest.Module{Modinfo: []string{"vermagic=" + vm},
		Exports: []elftest.Export{{Name: "nic_core_hello", CRC: 0xdead}}}.Bytes()
	root = tree(t, files)
	indexTree(t, root, "opt")
	rep = lintOf(t, root)
	require.Equal(t, []string{dir + "/extra/nic.ko: dependency"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "uses symbol nic_core_hello with version 0x00001000, but nic_core exports it with 0x0000dead")

	// A dependency the image holds that exports nothing it uses.
	files = pair()
	files["opt/lib/modules/"+kver+"/extra/nic_core.ko"] = mod([]string{"other_fn"}, nil)
	root = tree(t, files)
	indexTree(t, root, "opt")
	rep = lintOf(t, root)
	require.Equal(t, []string{dir + "/extra/nic.ko: dependency"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "depmod finds no symbol of the image's nic_core that it uses")

	// A cycle.
	root = tree(t, map[string][]byte{
		"opt/lib/modules/" + kver + "/a.ko": mod([]string{"a_fn"}, []string{"b_fn"}),
		"opt/lib/modules/" + kver + "/b.ko": mod([]string{"b_fn"}, []string{"a_fn"}),
	})
	rep = lintOf(t, root)
	require.Equal(t, []string{dir + ": dependency"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "depend on each other in a cycle")
}

func TestModuleMissing(t *testing.T) {
	root := tree(t, pair())
	indexTree(t, root, "opt")
	rep := lintOf(t, root, WithModules("nic", "gpu"))
	require.Equal(t, []string{"/opt/lib/modules/" + kver + ": module-missing"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "the Module loads gpu, which is neither a module of the image nor an alias of one (the image has nic, nic_core)")
}

func TestFirmware(t *testing.T) {
	files := pair()
	files["opt/lib/modules/"+kver+"/extra/nic.ko"] = mod(nil, []string{"nic_core_hello"}, "depends=nic_core", "firmware=acme/nic.bin", "firmware=acme/nic-2.bin")
	files["firmware/acme/nic.bin"] = []byte("FW")
	root := tree(t, files)
	indexTree(t, root, "opt")
	rep := lintOf(t, root)
	assert.Empty(t, rep.Findings)
	assert.Contains(t, rep.Notes, "firmware not checked: no firmware path given (modprobe.firmwarePath)")
	rep = lintOf(t, root, WithFirmwarePath("/firmware"))
	require.Equal(t, []string{"/opt/lib/modules/" + kver + "/extra/nic.ko: firmware-missing"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "declares firmware acme/nic-2.bin (MODULE_FIRMWARE), which is not in the image at /firmware/acme/nic-2.bin")
}

// testSigner returns a signer with a fresh ECDSA key.
func testSigner(t *testing.T) (*signfile.Signer, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x1234abcd), Subject: pkix.Name{CommonName: "acme signing"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<32, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	s, err := signfile.NewSigner(crypto.SHA256, key, cert)
	require.NoError(t, err)
	return s, "12:34:AB:CD"
}

func TestSignatures(t *testing.T) {
	dir := "/opt/lib/modules/" + kver
	root := tree(t, pair())
	indexTree(t, root, "opt")
	rep := lintOf(t, root, WithSigned())
	assert.Equal(t, []string{dir + "/extra/nic.ko: unsigned", dir + "/extra/nic_core.ko: unsigned"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, "is not signed: a kernel that enforces module signatures (Secure Boot, module.sig_enforce=1) refuses it")
	assert.Empty(t, lintOf(t, root).Findings, "signatures are not asked for")

	s, keyID := testSigner(t)
	for _, p := range []string{"extra/nic.ko", "extra/nic_core.ko"} {
		require.NoError(t, s.SignFile(filepath.Join(root, "opt/lib/modules", kver, p), ""))
	}
	indexTree(t, root, "opt")
	rep = lintOf(t, root, WithSigned("1234abcd"))
	assert.Empty(t, rep.Findings)
	require.NotNil(t, rep.Modules[0].Signature)
	assert.Equal(t, signfile.Signature{ID: "PKCS#7", Signer: "acme signing", KeyID: keyID, Hash: "sha256"}, *rep.Modules[0].Signature)
	rep = lintOf(t, root, WithSigned("AA:BB"))
	assert.Equal(t, []string{dir + "/extra/nic.ko: signature", dir + "/extra/nic_core.ko: signature"}, findings(rep))
	assert.Contains(t, rep.Findings[0].Message, `is signed by key 12:34:AB:CD (signer "acme signing"), not by one of the keys asked for`)
}

func TestHostLink(t *testing.T) {
	dir := "/opt/lib/modules/" + kver
	host := tree(t, map[string][]byte{
		"lib/modules/" + kver + "/kernel/net/tls/tls.ko": mod([]string{"tls_hello"}, nil, "intree=Y"),
	})
	files := pair()
	files["opt/lib/modules/"+kver+"/extra/ext.ko"] = mod(nil, []string{"tls_hello"}, "depends=tls")
	root := tree(t, files)
	// KMM's documented link into the node's tree, made when the node's
	// tree is where the build ran: depmod follows it.
	link := filepath.Join(root, "opt/lib/modules", kver, "host")
	require.NoError(t, os.Symlink(filepath.Join(host, "lib/modules", kver), link))
	indexTree(t, root, "opt")
	rep := lintOf(t, root)
	assert.Empty(t, rep.Findings)
	assert.Equal(t, []string{dir + "/host"}, rep.HostLinks)

	// Against the kernel's own tree, the same.
	assert.Empty(t, lintOf(t, root, WithKernelTree(host)).Findings)

	// The link dangles where the linter runs and no tree is given: the
	// indexes cannot be compared, and that is said.
	require.NoError(t, os.Remove(link))
	require.NoError(t, os.Symlink("/nonexistent/lib/modules/"+kver, link))
	rep = lintOf(t, root)
	assert.Empty(t, rep.Findings)
	assert.Contains(t, strings.Join(rep.Notes, "\n"), "depmod's files were not compared")
	assert.Contains(t, strings.Join(rep.Notes, "\n"), "dependencies on the node's own modules were not checked")
	assert.Empty(t, lintOf(t, root, WithKernelTree(host)).Findings, "the kernel tree stands for the link")

	// A kernel tree that lacks the dependency.
	other := tree(t, map[string][]byte{"lib/modules/" + kver + "/kernel/lib/crc7.ko": mod(nil, nil, "intree=Y")})
	rep = lintOf(t, root, WithKernelTree(other))
	assert.Contains(t, findings(rep), dir+"/extra/ext.ko: dependency")
}

func TestBadInput(t *testing.T) {
	_, err := Tree(context.Background(), "/nonexistent", kver)
	assert.ErrorContains(t, err, "/nonexistent")
	_, err = Tree(context.Background(), t.TempDir(), "../x")
	assert.ErrorContains(t, err, `invalid kernel version "../x"`)
	_, err = Tree(context.Background(), t.TempDir(), kver, WithKernelTree(t.TempDir()))
	assert.ErrorContains(t, err, "no in-tree module of the running kernel found")
}
