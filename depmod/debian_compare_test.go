package depmod

import (
	"github.com/kmmkit/kmmkit/depmod/modfile"

	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"

	"github.com/kmmkit/kmmkit/depmod/index"
	"github.com/kmmkit/kmmkit/internal/testenv"
)

// debianCompare runs both depmods on two copies of (part of) the Debian
// tree and compares every output.
func debianCompare(t *testing.T, o Options, keep func(string) bool, transform func(string, []byte) (string, []byte), prepare func(moddir string)) (runOutcome, runOutcome) {
	t.Helper()
	kmod := kmodDepmod(t)
	root, kver := testenv.KernelTree(t)
	o.KernelVersion = kver
	if o.ConfigPaths == nil {
		o.ConfigPaths = []string{t.TempDir()}
	}
	src := filepath.Join(root, "lib", "modules", kver)
	baseK, baseO := t.TempDir(), t.TempDir()
	for _, b := range []string{baseK, baseO} {
		testenv.LinkTree(t, src, filepath.Join(b, "lib", "modules", kver), testenv.TreeOptions{Keep: keep, Transform: transform})
		if prepare != nil {
			prepare(filepath.Join(b, "lib", "modules", kver))
		}
	}
	k := runKmod(t, kmod, baseK, o)
	us := runOurs(t, baseO, o)
	compareRuns(t, k, us)
	require.Len(t, k.files, 10, "kmod wrote all ten files")
	return k, us
}

func TestDebianTree(t *testing.T) {
	k, _ := debianCompare(t, Options{}, nil, nil, nil)
	assert.Greater(t, bytes.Count(k.files["modules.dep"], []byte("\n")), 4000)
}

func TestDebianTreeWithoutModulesOrder(t *testing.T) {
	debianCompare(t, Options{}, nil, nil, func(dir string) { require.NoError(t, os.Remove(filepath.Join(dir, "modules.order"))) })
}

// subset keeps a few hundred modules, so compressing them stays quick.
func subset(rel string) bool {
	return !strings.HasPrefix(rel, "kernel/") || strings.HasPrefix(rel, "kernel/fs/") || strings.HasPrefix(rel, "kernel/crypto/") || strings.HasPrefix(rel, "kernel/lib/")
}

// xzSubset is the crypto and lib parts of subset (115 modules, 8 MB):
// the pure-Go xz decoder is slow under the race detector, and these still
// hold real dependency chains.
func xzSubset(rel string) bool {
	return strings.HasPrefix(rel, "kernel/crypto/") || strings.HasPrefix(rel, "kernel/lib/")
}

// TestDebianTreeCompressed compares the two depmods on part of the Debian
// tree compressed with the encoders' defaults, and compressed with xz as
// the kernel's modules_install does (CRC32 check, 1 MiB dictionary: what
// Debian's .ko.xz modules are).
func TestDebianTreeCompressed(t *testing.T) {
	root, _ := testenv.KernelTree(t)
	cache := filepath.Join(filepath.Dir(root), "test-cache")
	kernelXZ := func(t *testing.T, data []byte) []byte {
		var b bytes.Buffer
		w, err := xz.WriterConfig{DictCap: 1 << 20, CheckSum: xz.CRC32}.NewWriter(&b)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
		return b.Bytes()
	}
	for _, v := range []struct {
		name, ext, dir string
		compress       func(*testing.T, []byte) []byte
		modules        func(string) bool
	}{
		{".xz", ".xz", cache, func(t *testing.T, data []byte) []byte { return compress(t, data, ".xz") }, xzSubset},
		{".zst", ".zst", cache, func(t *testing.T, data []byte) []byte { return compress(t, data, ".zst") }, subset},
		{"modules_install.xz", ".xz", filepath.Join(cache, "modules_install"), kernelXZ, xzSubset},
	} {
		t.Run(v.name, func(t *testing.T) {
			k, _ := debianCompare(t, Options{}, v.modules, func(rel string, data []byte) (string, []byte) {
				return rel + v.ext, cachedCompress(t, filepath.Join(v.dir, rel+v.ext), data, v.compress)
			}, nil)
			assert.Contains(t, string(k.files["modules.dep"]), ".ko"+v.ext+":")
		})
	}
}

func TestDebianTreeSystemMapWarnings(t *testing.T) {
	root, kver := testenv.KernelTree(t)
	sysmap := filepath.Join(root, "boot", "System.map-"+kver)
	k, us := debianCompare(t, Options{SystemMap: sysmap, ErrSyms: true}, subset, nil, nil)
	want, got := messagesWith(k.messages, "needs unknown symbol"), messagesWith(us.messages, "needs unknown symbol")
	require.Equal(t, len(want), len(got))
	require.NotEmpty(t, want)
	for i := range want {
		assert.Equal(t, stripBase(want[i]), stripBase(got[i]))
	}
}

// TestReaderAgainstModprobe checks the index reader on kmod's own files:
// exact lookups against modules.dep, and alias matching against
// `modprobe --resolve-alias`.
func TestReaderAgainstModprobe(t *testing.T) {
	kmodDepmod(t)
	modprobe := testenv.LookPath(t, "modprobe", "apt-get install kmod")
	root, kver := testenv.KernelTree(t)
	base := t.TempDir()
	testenv.LinkTree(t, filepath.Join(root, "lib", "modules", kver), filepath.Join(base, "lib", "modules", kver), testenv.TreeOptions{})
	out, err := exec.Command(kmodDepmod(t), "-b", base, "-C", t.TempDir(), kver).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dir := filepath.Join(base, "lib", "modules", kver)

	dep, err := index.Open(filepath.Join(dir, "modules.dep.bin"))
	require.NoError(t, err)
	text, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(text), "\n"), "\n")
	for _, line := range lines {
		path := line[:strings.IndexByte(line, ':')]
		name := modfile.ModuleName(filepath.Base(path))
		got, ok, err := dep.Lookup(name)
		require.NoError(t, err)
		require.True(t, ok, name)
		require.Equal(t, line, got)
	}
	_, ok, err := dep.Lookup("no_such_module")
	require.NoError(t, err)
	assert.False(t, ok)

	aliases, err := index.Open(filepath.Join(dir, "modules.alias.bin"))
	require.NoError(t, err)
	var patterns []string
	require.NoError(t, aliases.Walk(func(key string, _ []index.Value) error {
		patterns = append(patterns, key)
		return nil
	}))
	require.Greater(t, len(patterns), 10000)
	rng := rand.New(rand.NewPCG(1, 2))
	resolved := 0
	for range 150 {
		query := concreteQuery(patterns[rng.IntN(len(patterns))], rng)
		want := resolveAlias(t, modprobe, base, kver, query)
		vals, err := aliases.Match(query)
		require.NoError(t, err)
		var got []string
		for _, v := range vals {
			if !slices.Contains(got, v.Value) {
				got = append(got, v.Value)
			}
		}
		assert.Equal(t, want, got, "query %q", query)
		if len(want) > 0 {
			resolved++
		}
	}
	assert.Greater(t, resolved, 140, "modprobe resolved the queries")
}

// concreteQuery turns a stored alias pattern into a string it matches.
func concreteQuery(p string, rng *rand.Rand) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*':
			if rng.IntN(2) == 0 {
				b.WriteString("00A1")
			}
		case '?':
			b.WriteByte('7')
		case '[':
			j := strings.IndexByte(p[i:], ']')
			if j < 0 {
				b.WriteByte('[')
				continue
			}
			set := p[i+1 : i+j]
			if len(set) > 0 && set[0] != '!' && set[0] != '^' {
				b.WriteByte(set[0])
			} else {
				b.WriteByte('#')
			}
			i += j
		default:
			b.WriteByte(p[i])
		}
	}
	return b.String()
}

// resolveAlias asks modprobe which modules an alias resolves to, in order.
func resolveAlias(t *testing.T, modprobe, base, kver, alias string) []string {
	t.Helper()
	cmd := exec.Command(modprobe, "-C", "/dev/null", "-d", base, "-S", kver, "-R", alias)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, io.Discard
	_ = cmd.Run() // exit 1 when nothing matches
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if l != "" && !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// cachedCompress compresses data, keeping the result at path for later
// runs: compressing a few hundred modules takes a while under -race.
func cachedCompress(t *testing.T, path string, data []byte, compress func(*testing.T, []byte) []byte) []byte {
	t.Helper()
	if out, err := os.ReadFile(path); err == nil {
		return out
	}
	out := compress(t, data)
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, out, 0o644))
	require.NoError(t, os.Rename(tmp, path))
	return out
}
