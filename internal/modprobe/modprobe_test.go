package modprobe

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name   string
		argv   []string
		want   Command
		names  []string
		params []string
	}{
		{name: "KMM's load", argv: []string{"-vd", "/tmp/opt", "nic", "debug=1", "mode=fast"},
			want: Command{Verbose: 1, Dir: "/tmp/opt", DirAt: 1, RemoveAt: -1}, names: []string{"nic"}, params: []string{"debug=1", "mode=fast"}},
		{name: "KMM's unload", argv: []string{"-rvd", "/tmp/opt", "a", "b"},
			want: Command{Remove: true, Verbose: 1, Dir: "/tmp/opt", DirAt: 1, RemoveAt: 0}, names: []string{"a", "b"}},
		{name: "value glued to the short option", argv: []string{"-d/tmp/opt", "nic"},
			want: Command{Dir: "/tmp/opt", DirAt: 0, RemoveAt: -1}, names: []string{"nic"}},
		{name: "long options, = and a prefix", argv: []string{"--dirname=/x", "--first", "--verbose", "--verbose", "-q", "nic"},
			want: Command{Dir: "/x", DirAt: 0, RemoveAt: -1, FirstTime: true, Verbose: 2, Quiet: true}, names: []string{"nic"}},
		{name: "long option value in the next word", argv: []string{"--dirname", "/x", "nic"},
			want: Command{Dir: "/x", DirAt: 1, RemoveAt: -1}, names: []string{"nic"}},
		{name: "the last -d wins", argv: []string{"-d", "/a", "-d", "/b", "nic"},
			want: Command{Dir: "/b", DirAt: 3, RemoveAt: -1}, names: []string{"nic"}},
		{name: "options after the module are options (permutation)", argv: []string{"nic", "p=1", "-v", "q"},
			want: Command{Verbose: 1, DirAt: -1, RemoveAt: -1}, names: []string{"nic"}, params: []string{"p=1", "q"}},
		{name: "-a: every word is a module", argv: []string{"-a", "x", "y"},
			want: Command{All: true, DirAt: -1, RemoveAt: -1}, names: []string{"x", "y"}},
		{name: "-- ends the options", argv: []string{"--", "nic", "-v"},
			want: Command{DirAt: -1, RemoveAt: -1}, names: []string{"nic"}, params: []string{"-v"}},
		{name: "no-effect options are accepted", argv: []string{"-b", "-i", "-s", "--use-blacklist", "--ignore-install", "nic"},
			want: Command{DirAt: -1, RemoveAt: -1}, names: []string{"nic"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, errs := Parse(c.argv)
			require.Empty(t, errs)
			assert.Equal(t, c.names, Values(got.Names))
			assert.Equal(t, c.params, Values(got.Params))
			got.Names, got.Params = nil, nil
			assert.Equal(t, c.want, *got)
		})
	}
}

func TestParseErrorsNameTheOption(t *testing.T) {
	for _, c := range []struct {
		argv []string
		want []string // Error() of each error
		at   []int
	}{
		{[]string{"-n", "nic"}, []string{"modprobe option -n: it only prints or looks up; nothing would be loaded or removed, yet the worker would report success"}, []int{0}},
		{[]string{"nic", "--dry-run"}, []string{"modprobe option --dry-run: it only prints or looks up; nothing would be loaded or removed, yet the worker would report success"}, []int{1}},
		{[]string{"--show-depends", "nic"}, []string{"modprobe option --show-depends: it only prints or looks up; nothing would be loaded or removed, yet the worker would report success"}, []int{0}},
		{[]string{"-vf", "nic"}, []string{"modprobe option -f: forcing past the kernel's version checks is not supported; build the module against the node's kernel"}, []int{0}},
		{[]string{"--force-vermagic", "nic"}, []string{"modprobe option --force-vermagic: forcing past the kernel's version checks is not supported; build the module against the node's kernel"}, []int{0}},
		{[]string{"-C", "/etc/x.conf", "nic"}, []string{"modprobe option -C: the worker reads no modprobe.d configuration; use modulesLoadingOrder for the load order and parameters for module options"}, []int{1}},
		{[]string{"-S", "6.1.0", "nic"}, []string{"modprobe option -S: the worker always uses the node's kernel (the config's kernelVersion); another version is not supported"}, []int{1}},
		{[]string{"-r", "-w", "100", "nic"}, []string{"modprobe option -w: waiting for a module in use to be released is not supported"}, []int{2}},
		{[]string{"-r", "--remove-holders", "nic"}, []string{"modprobe option --remove-holders: removing the modules that hold a module is not supported; list them in the unload arguments"}, []int{1}},
		{[]string{"-x", "nic"}, []string{"modprobe option -x: is not a modprobe option"}, []int{0}},
		{[]string{"--bogus", "nic"}, []string{"modprobe option --bogus: is not a modprobe option"}, []int{0}},
		{[]string{"--re", "nic"}, []string{"modprobe option --re: is ambiguous (--remove or --remove-dependencies?)"}, []int{0}},
		{[]string{"nic", "-d"}, []string{"modprobe option -d: needs a value"}, []int{1}},
		{[]string{"nic", "--dirname"}, []string{"modprobe option --dirname: needs a value"}, []int{1}},
		{[]string{"--verbose=2", "nic"}, []string{"modprobe option --verbose: takes no value"}, []int{0}},
		{[]string{"-nx", "nic"}, []string{
			"modprobe option -n: it only prints or looks up; nothing would be loaded or removed, yet the worker would report success",
			"modprobe option -x: is not a modprobe option"}, []int{0, 0}},
	} {
		_, errs := Parse(c.argv)
		var msgs []string
		var at []int
		for _, e := range errs {
			msgs = append(msgs, e.Error())
			at = append(at, e.At)
		}
		assert.Equal(t, c.want, msgs, "%q", c.argv)
		assert.Equal(t, c.at, at, "%q", c.argv)
	}
}

func TestNoEffect(t *testing.T) {
	got := NoEffect()
	assert.Contains(t, got, "-b (--use-blacklist)")
	assert.Contains(t, got, "-i (--ignore-install, --ignore-remove)")
	assert.Contains(t, got, "-s (--syslog)")
	assert.Len(t, got, 3)
}

func TestOptions(t *testing.T) {
	assert.Equal(t, `a=1 flag who="big world" q="x y" r='x y'`, Options([]string{"a=1", "flag", "who=big world", `q="x y"`, "r='x y'"}))
	assert.Equal(t, "", Options(nil))
}

func FuzzParse(f *testing.F) {
	f.Add("-rvd\x00/tmp/opt\x00--first-time\x00a\x00b=1")
	f.Add("--dirname\x00--\x00-x")
	f.Fuzz(func(t *testing.T, s string) {
		var argv []string
		start := 0
		for i := 0; i <= len(s); i++ {
			if i == len(s) || s[i] == 0 {
				argv = append(argv, s[start:i])
				start = i + 1
			}
		}
		c, errs := Parse(argv)
		for _, e := range errs {
			if e.At < 0 || e.At >= len(argv) {
				t.Fatalf("error index %d out of range for %q", e.At, argv)
			}
		}
		for _, w := range append(append([]Word(nil), c.Names...), c.Params...) {
			if argv[w.At] != w.Value {
				t.Fatalf("word %q at %d is %q", w.Value, w.At, argv[w.At])
			}
		}
		if c.DirAt >= len(argv) || c.RemoveAt >= len(argv) {
			t.Fatalf("index out of range")
		}
	})
}
