package depmod

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/ulikunitz/xz"

	"github.com/kmmkit/kmmkit/internal/elftest"
)

type ex = elftest.Export
type nd = elftest.Need

func exp(name string, crc uint32) ex              { return ex{Name: name, CRC: crc} }
func need(name string, weak bool) nd              { return nd{Name: name, Weak: weak} }
func ver(name string, crc uint64) elftest.Version { return elftest.Version{Name: name, CRC: crc} }

// basicModules is a tree exercising what depmod reads from modules:
// dependency chains, weak symbols, duplicate exports, aliases with
// wildcards, dashes and brackets, softdeps, devnames, __versions, the
// __ksymtab_strings fallback, and broken files.
func basicModules(is32, bigEndian bool) map[string]elftest.Module {
	m := func(mod elftest.Module) elftest.Module {
		mod.Is32, mod.BigEndian = is32, bigEndian
		if bigEndian {
			mod.Machine = 22 // s390
			if is32 {
				mod.Machine = 20 // ppc
			}
		}
		return mod
	}
	return map[string]elftest.Module{
		"kernel/drivers/core/core-lib.ko": m(elftest.Module{
			Modinfo: []string{"license=GPL", "alias=pci:v00008086d*sv*sd*bc*sc*i*", "alias=core-lib-alias"},
			Exports: []ex{{Name: "core_init", CRC: 0x11}, {Name: "core_shared", CRC: 0x12}, {Name: "dup_export", CRC: 0x13}},
		}),
		"kernel/drivers/net/nic-drv.ko": m(elftest.Module{
			Modinfo:  []string{"alias=of:N*T*Cvendor,nic-drv[0-9]", "alias=usb:v1234p*d*dc*dsc*dp*ic*isc*ip*in*", "softdep=pre: core-lib post: helper", "depends=ignored"},
			Exports:  []ex{{Name: "nic_register", CRC: 0x21}},
			Needs:    []nd{{Name: "core_init", Weak: false}, {Name: "helper_fn", Weak: false}, {Name: "printk", Weak: false}},
			Versions: []elftest.Version{{Name: "module_layout", CRC: 0xabc}, {Name: "core_init", CRC: 0x11}, {Name: "printk", CRC: 0x1}},
		}),
		"kernel/drivers/net/helper.ko": m(elftest.Module{
			Modinfo: []string{"alias=helper-*"},
			Exports: []ex{{Name: "helper_fn", CRC: 0x31}, {Name: "dup_export", CRC: 0x32}},
			Needs:   []nd{{Name: "core_shared", Weak: false}},
		}),
		"kernel/drivers/misc/weak-user.ko": m(elftest.Module{
			Modinfo: []string{"softdep=pre: nic-drv"},
			Needs:   []nd{{Name: "nic_register", Weak: true}, {Name: "dup_export", Weak: false}, {Name: "nothing_exports_this", Weak: false}},
		}),
		"kernel/drivers/char/devnode.ko": m(elftest.Module{
			Modinfo: []string{"alias=char-major-10-1", "alias=char-major-10-2", "alias=devname:foo", "alias=block-major-3-4"},
		}),
		"kernel/drivers/block/blockdev.ko": m(elftest.Module{
			Modinfo: []string{"alias=block-major-8-*", "alias=block-major-8-0", "alias=devname:sdz"},
		}),
		"kernel/drivers/char/half.ko": m(elftest.Module{
			Modinfo: []string{"alias=devname:lonely"},
		}),
		"kernel/fs/ns-fs.ko": m(elftest.Module{
			Modinfo:        []string{"alias=fs-nsfs", "alias", "alias=bad]bracket", "alias=[unterminated"},
			KsymtabStrings: []string{"nsfs_export", "MY_NAMESPACE"},
		}),
		"kernel/fs/abs-crc.ko": m(elftest.Module{
			Exports: []ex{{Name: "abs_sym", CRC: 0x41}},
			AbsCRCs: true,
			Needs:   []nd{{Name: "nsfs_export", Weak: false}},
		}),
		"kernel/lib/no-modinfo.ko": m(elftest.Module{NoModinfo: true, Needs: []nd{{Name: "abs_sym", Weak: false}}}),
		"kernel/lib/no-symtab.ko":  m(elftest.Module{NoSymtab: true, Modinfo: []string{"alias=nosym"}, KsymtabStrings: []string{"from_strings"}}),
		"extra/user-of-strings.ko": m(elftest.Module{Needs: []nd{{Name: "from_strings", Weak: false}, {Name: "core_init", Weak: false}}}),
	}
}

func modulesTree(mods map[string]elftest.Module) tree {
	tr := tree{}
	for p, m := range mods {
		tr[p] = m.Bytes()
	}
	return tr
}

func withBroken(tr tree) tree {
	good := elftest.Module{Modinfo: []string{"alias=x"}}.Bytes()
	tr["kernel/broken/not-elf.ko"] = []byte("this is not an ELF file at all")
	tr["kernel/broken/tiny.ko"] = []byte("\x7fELF")
	tr["kernel/broken/truncated.ko"] = good[:len(good)/2]
	tr["kernel/broken/notes.txt"] = []byte("not a module")
	tr["kernel/broken/.ko"] = good
	return tr
}

func TestCompareBasicTree(t *testing.T) {
	for _, v := range []struct {
		name           string
		is32, bigEndan bool
	}{{"elf64-le", false, false}, {"elf32-le", true, false}, {"elf64-be", false, true}, {"elf32-be", true, true}} {
		t.Run(v.name, func(t *testing.T) {
			tr := withBroken(modulesTree(basicModules(v.is32, v.bigEndan)))
			tr["modules.order"] = []byte("kernel/drivers/net/nic-drv.ko\nkernel/fs/ns-fs.ko\nkernel/unknown/gone.ko\nkernel/drivers/core/core-lib.ko\n")
			tr["modules.builtin"] = []byte("kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c-generic.ko\n/abs/not-alpha.ko\nkernel/drivers/noext\n")
			tr["modules.builtin.modinfo"] = []byte("ext4.alias=fs-ext4\x00ext4.license=GPL\x00crc32c_generic.alias=crypto-crc32c\x00" +
				"crc32c_generic.alias=crc32c-generic\x00shared.alias=dup\x00other.alias=dup\x00noalias\x00x.alias=\x00ext4.alias=fs-[ext]4\x00")
			k, us := compareTree(t, tr, Options{})
			assert.Equal(t, 0, k.exitCode)
			assert.NotEmpty(t, k.files["modules.devname"])
			assert.Contains(t, string(us.files["modules.dep"]), "kernel/drivers/net/nic-drv.ko: kernel/drivers/net/helper.ko kernel/drivers/core/core-lib.ko\n")
			assert.Contains(t, string(us.files["modules.symbols"]), "alias symbol:MY_NAMESPACE ns_fs\n")
		})
	}
}

func TestCompareDryRun(t *testing.T) {
	tr := modulesTree(basicModules(false, false))
	k, us := compareTree(t, tr, Options{DryRun: &bytes.Buffer{}})
	assert.NotEmpty(t, k.stdout)
	assert.Empty(t, us.files, "-n writes no file")
}

func TestCompareNoModulesOrder(t *testing.T) {
	compareTree(t, modulesTree(basicModules(false, false)), Options{})
}

func TestCompareModulesOrderVariants(t *testing.T) {
	for name, order := range map[string]string{
		"corrupt last line": "kernel/fs/ns-fs.ko\nkernel/drivers/net/nic-drv.ko",
		"duplicate line":    "kernel/fs/ns-fs.ko\nkernel/drivers/net/helper.ko\nkernel/fs/ns-fs.ko\n",
		"dashes kept":       "kernel/drivers/core/core-lib.ko\nkernel/drivers/core/core_lib.ko\n",
		"empty":             "",
	} {
		t.Run(name, func(t *testing.T) {
			tr := modulesTree(basicModules(false, false))
			tr["modules.order"] = []byte(order)
			compareTree(t, tr, Options{})
		})
	}
}

func compress(t *testing.T, data []byte, ext string) []byte {
	t.Helper()
	var b bytes.Buffer
	switch ext {
	case ".xz":
		w, err := xz.NewWriter(&b)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	case ".zst":
		w, err := zstd.NewWriter(&b)
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
		require.NoError(t, w.Close())
	}
	return b.Bytes()
}

func TestCompareCompressed(t *testing.T) {
	for _, ext := range []string{".xz", ".zst"} {
		t.Run(ext, func(t *testing.T) {
			tr := tree{}
			for p, m := range basicModules(false, false) {
				tr[p+ext] = compress(t, m.Bytes(), ext)
			}
			// The magic decides, not the name: an xz file named .ko.
			tr["kernel/misc/named-wrong.ko"] = compress(t, elftest.Module{Modinfo: []string{"alias=wrong-name"}}.Bytes(), ".xz")
			tr["modules.order"] = []byte("kernel/drivers/net/nic-drv.ko\nkernel/drivers/net/helper.ko\n")
			_, us := compareTree(t, tr, Options{})
			assert.Contains(t, string(us.files["modules.dep"]), "kernel/drivers/net/nic-drv.ko"+ext+": ")
		})
	}
}

func TestCompareDuplicatesAndConfig(t *testing.T) {
	mod := func(alias string) []byte { return elftest.Module{Modinfo: []string{"alias=" + alias}}.Bytes() }
	base := tree{
		"kernel/fs/fat.ko":             mod("kernel-fat"),
		"updates/fat.ko":               mod("updates-fat"),
		"updates/a/dup.ko":             mod("updates-a-dup"),
		"updates/b/dup.ko":             mod("updates-b-dup"),
		"extra/fat.ko":                 mod("extra-fat"),
		"extra/snd-hda.ko":             mod("extra-snd"),
		"kernel/sound/snd-hda.ko":      mod("kernel-snd"),
		"kernel/sound/snd_hda.ko.xz":   compress(t, elftest.Module{Modinfo: []string{"alias=kernel-snd-xz"}}.Bytes(), ".xz"),
		"kernel/skip/build/hidden.ko":  mod("in-build"),
		"kernel/skip/source/hidden.ko": mod("in-source"),
		"kernel/excluded/gone.ko":      mod("excluded"),
		"weird/fat.ko":                 mod("weird-fat"),
	}
	configs := map[string]string{
		"default":                "",
		"search order":           "search extra updates built-in\n",
		"search weird":           "search weird\nsearch updates\n",
		"override":               "override fat * kernel/fs\noverride snd-hda 6.1.* extra\n",
		"override no kver match": "override fat 5.* kernel/fs\n",
		"exclude":                "exclude excluded weird\n",
		"external":               "external * /ext1\nexternal 6.1.0-99-test /ext2\nsearch external updates built-in\n",
		"bad lines":              "frobnicate\nsearch\noverride fat\n# comment\n\ninclude x\nsearch \\\n  extra\n",
	}
	for name, conf := range configs {
		t.Run(name, func(t *testing.T) {
			tr := tree{}
			for k, v := range base {
				tr[k] = v
			}
			if strings.Contains(conf, "external") {
				tr["/ext1/fat.ko"] = mod("ext1-fat")
				tr["/ext2/fat.ko"] = mod("ext2-fat")
				tr["/ext2/only-ext.ko"] = mod("only-ext")
			}
			confDir := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(confDir, "test.conf"), []byte(conf), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(confDir, "ignored.txt"), []byte("search weird\n"), 0o644))
			o := Options{ConfigPaths: []string{confDir}}
			if strings.Contains(conf, "external") {
				// External paths are absolute on the host; point both runs
				// at one copy, outside either base.
				extRoot := t.TempDir()
				tree{"/ext1/fat.ko": mod("ext1-fat"), "/ext2/fat.ko": mod("ext2-fat"), "/ext2/only-ext.ko": mod("only-ext")}.write(t, extRoot, "")
				conf = strings.ReplaceAll(conf, "/ext1", extRoot+"/ext1")
				conf = strings.ReplaceAll(conf, "/ext2", extRoot+"/ext2")
				require.NoError(t, os.WriteFile(filepath.Join(confDir, "test.conf"), []byte(conf), 0o644))
				delete(tr, "/ext1/fat.ko")
				delete(tr, "/ext2/fat.ko")
				delete(tr, "/ext2/only-ext.ko")
			}
			compareTree(t, tr, o)
		})
	}
}

func TestCompareCycles(t *testing.T) {
	cyc := func(exports []string, needs ...string) []byte {
		var e []ex
		for _, s := range exports {
			e = append(e, ex{Name: s})
		}
		var n []nd
		for _, s := range needs {
			n = append(n, nd{Name: s})
		}
		return elftest.Module{Exports: e, Needs: n}.Bytes()
	}
	tr := tree{
		"kernel/ca.ko":   cyc([]string{"sa"}, "sb"),
		"kernel/cb.ko":   cyc([]string{"sb"}, "sc"),
		"kernel/cc.ko":   cyc([]string{"sc"}, "sa"),
		"kernel/d1.ko":   cyc([]string{"s1"}, "s2"),
		"kernel/d2.ko":   cyc([]string{"s2"}, "s1"),
		"kernel/user.ko": cyc(nil, "sa"),
		"kernel/ok.ko":   cyc([]string{"sok"}),
	}
	k, us := compareTree(t, tr, Options{})
	assert.Equal(t, 1, k.exitCode)
	assert.Empty(t, k.files, "no file on a cycle")
	assert.Equal(t, messagesWith(k.messages, "Cycle detected"), messagesWith(us.messages, "Cycle detected"))
	assert.Equal(t, messagesWith(k.messages, "dependency cycles!"), messagesWith(us.messages, "dependency cycles!"))
	assert.Contains(t, us.messages, "ERROR: Found 5 modules in dependency cycles!")
}

// TestCycleThatHangsKmod is the case where kmod 30's cycle report never
// ends (reference §7.3): ours must finish and name both cycles.
func TestCycleThatHangsKmod(t *testing.T) {
	cyc := func(export string, needs ...string) elftest.Module {
		var n []nd
		for _, s := range needs {
			n = append(n, nd{Name: s})
		}
		return elftest.Module{Exports: []ex{{Name: export}}, Needs: n}
	}
	tr := modulesTree(map[string]elftest.Module{
		"kernel/a.ko": cyc("sa", "sb", "sr"),
		"kernel/b.ko": cyc("sb", "sa"),
		"kernel/r.ko": cyc("sr", "sp"),
		"kernel/p.ko": cyc("sp", "sq"),
		"kernel/q.ko": cyc("sq", "sp"),
	})
	tr["modules.order"] = []byte("kernel/r.ko\nkernel/a.ko\nkernel/b.ko\nkernel/p.ko\nkernel/q.ko\n")
	base := t.TempDir()
	tr.write(t, base, "6.1.0-1")
	res := runOurs(t, base, Options{KernelVersion: "6.1.0-1", ConfigPaths: []string{}})
	assert.Equal(t, 1, res.exitCode)
	assert.Contains(t, res.messages, "ERROR: Found 4 modules in dependency cycles!")
	assert.Len(t, messagesWith(res.messages, "Cycle detected"), 2)
}

func TestCompareSymvers(t *testing.T) {
	tr := modulesTree(basicModules(false, false))
	dir := t.TempDir()
	symvers := filepath.Join(dir, "Module.symvers")
	require.NoError(t, os.WriteFile(symvers, []byte(
		"0x00000001\tprintk\tvmlinux\tEXPORT_SYMBOL\t\n"+
			"0x00000abc\tmodule_layout\tvmlinux\tEXPORT_SYMBOL\t\n"+
			"0x00000999\tcore_init\tvmlinux\tEXPORT_SYMBOL\t\n"+
			"0xzz\tbad_crc\tvmlinux\tEXPORT_SYMBOL\n"+
			"0x1\tthree_tokens\tvmlinux\n"+
			"0x2\tother_module\tdrivers/x\tEXPORT_SYMBOL\n"), 0o644))
	k, us := compareTree(t, tr, Options{Symvers: symvers, ErrSyms: true})
	for _, kind := range []string{"needs unknown symbol", "disagrees about version"} {
		want := messagesWith(k.messages, kind)
		got := messagesWith(us.messages, kind)
		require.Equal(t, len(want), len(got), "%s\nkmod: %v\nours: %v", kind, want, got)
		for i := range want {
			// The messages name the module by its path, which differs
			// between the two copies of the tree.
			assert.Equal(t, stripBase(want[i]), stripBase(got[i]))
		}
	}
	assert.NotEmpty(t, messagesWith(k.messages, "needs unknown symbol"))
}

func stripBase(msg string) string {
	if i := strings.Index(msg, "/lib/modules/"); i >= 0 {
		j := strings.LastIndex(msg[:i], " ")
		return msg[:j+1] + msg[i:]
	}
	return msg
}

func TestCompareSystemMapAndPrefix(t *testing.T) {
	tr := modulesTree(map[string]elftest.Module{
		"kernel/a.ko": {Exports: []ex{{Name: "_exported"}}, Needs: []nd{{Name: "_kernel_fn"}, {Name: "_missing"}}},
		"kernel/b.ko": {Needs: []nd{{Name: "_exported"}, {Name: "._exported"}}},
	})
	sysmap := filepath.Join(t.TempDir(), "System.map")
	require.NoError(t, os.WriteFile(sysmap, []byte("ffffffff81000000 T _text\nffffffff81000010 r ___ksymtab__kernel_fn\nbroken\n"), 0o644))
	k, us := compareTree(t, tr, Options{SystemMap: sysmap, ErrSyms: true, SymbolPrefix: '_'})
	assert.Equal(t, len(messagesWith(k.messages, "unknown symbol")), len(messagesWith(us.messages, "unknown symbol")))
}

func TestCompareFileMode(t *testing.T) {
	tr := modulesTree(basicModules(false, false))
	kver := "6.1.0-99-test"
	files := []string{
		"lib/modules/" + kver + "/kernel/drivers/net/nic-drv.ko",
		"lib/modules/" + kver + "/kernel/drivers/core/core-lib.ko",
		"lib/modules/" + kver + "/extra/user-of-strings.ko",
	}
	compareTree(t, tr, Options{Files: files})
}

func TestCompareEmptyTree(t *testing.T) {
	k, _ := compareTree(t, tree{"kernel/.keep": nil}, Options{})
	assert.Equal(t, 12, len(k.files["modules.dep.bin"]))
	assert.Equal(t, 0, len(k.files["modules.builtin.bin"]))
}

func TestCompareManyModules(t *testing.T) {
	// Enough modules to fill many hash buckets, with dependencies i/2 and
	// i/3 (kmod counts dependency paths without memoising, so a denser
	// graph makes kmod itself run for hours).
	mods := map[string]elftest.Module{}
	for i := range 600 {
		m := elftest.Module{
			Modinfo: []string{fmt.Sprintf("alias=pci:v%04Xd*", i), fmt.Sprintf("alias=mod-%d-*", i%37)},
			Exports: []ex{{Name: fmt.Sprintf("sym_%d", i)}},
		}
		for _, d := range []int{i / 2, i / 3} {
			if d >= 0 && d < i {
				m.Needs = append(m.Needs, nd{Name: fmt.Sprintf("sym_%d", d), Weak: d%5 == 0})
			}
		}
		mods[fmt.Sprintf("kernel/dir%d/mod-%d.ko", i%7, i)] = m
	}
	tr := modulesTree(mods)
	var order strings.Builder
	for i := 0; i < 600; i += 3 {
		fmt.Fprintf(&order, "kernel/dir%d/mod-%d.ko\n", i%7, i)
	}
	tr["modules.order"] = []byte(order.String())
	compareTree(t, tr, Options{})
}
