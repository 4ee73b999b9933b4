package depmod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/stretchr/testify/require"

	"github.com/kmmkit/kmmkit/internal/testenv"
)

// kmodDepmod returns the path of kmod's depmod, version 30, or stops the
// test as testenv.Need does.
func kmodDepmod(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("depmod")
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if err != nil {
			if _, serr := os.Stat(p); serr == nil {
				path, err = p, nil
			}
		}
	}
	testenv.Need(t, "kmod's depmod", err == nil, "apt-get install kmod")
	out, verr := exec.Command(path, "-V").Output()
	require.NoError(t, verr)
	require.Contains(t, string(out), "kmod version 30", "the comparison needs the kmod of Debian 12")
	return path
}

// tree is a module tree to write: paths relative to lib/modules/<kver>
// (or absolute, for external directories) and their contents.
type tree map[string][]byte

// write writes the tree under base for kver.
func (tr tree) write(t *testing.T, base, kver string) {
	t.Helper()
	for p, data := range tr {
		full := p
		if !strings.HasPrefix(p, "/") {
			full = filepath.Join(base, "lib", "modules", kver, p)
		} else {
			full = filepath.Join(base, p)
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
		require.NoError(t, os.WriteFile(full, data, 0o644))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(base, "lib", "modules", kver), 0o755))
}

// runOutcome is what one depmod run left behind.
type runOutcome struct {
	exitCode int
	files    map[string][]byte // output files present after the run
	messages []string          // "LEVEL: text" lines
	stdout   []byte
}

// kmodArgs turns Options into kmod depmod arguments; base is the -b value.
func kmodArgs(o Options, base string) []string {
	args := []string{"-b", base}
	for _, c := range o.ConfigPaths {
		args = append(args, "-C", c)
	}
	if o.Symvers != "" {
		args = append(args, "-E", o.Symvers)
	}
	if o.SystemMap != "" {
		args = append(args, "-F", o.SystemMap)
	}
	if o.ErrSyms {
		args = append(args, "-e")
	}
	if o.SymbolPrefix != 0 {
		args = append(args, "-P", string(o.SymbolPrefix))
	}
	if o.DryRun != nil {
		args = append(args, "-n")
	}
	if o.Quick {
		args = append(args, "-A")
	}
	args = append(args, o.KernelVersion)
	return append(args, o.Files...)
}

// runKmod runs kmod's depmod on base.
func runKmod(t *testing.T, kmod, base string, o Options) runOutcome {
	t.Helper()
	cmd := exec.Command(kmod, kmodArgs(o, base)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := runOutcome{stdout: stdout.Bytes()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		out.exitCode = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if l != "" {
			out.messages = append(out.messages, strings.TrimPrefix(l, "depmod: "))
		}
	}
	out.files = readOutputs(t, filepath.Join(base, "lib", "modules", o.KernelVersion))
	return out
}

// runOurs runs our depmod on base.
func runOurs(t *testing.T, base string, o Options) runOutcome {
	t.Helper()
	var mu sync.Mutex
	var msgs []string
	o.BaseDir = base
	var stdout bytes.Buffer
	if o.DryRun != nil {
		o.DryRun = &stdout
	}
	o.Log = logr.New(&captureSink{add: func(s string) { mu.Lock(); msgs = append(msgs, s); mu.Unlock() }})
	_, err := Run(context.Background(), o)
	out := runOutcome{messages: msgs, stdout: stdout.Bytes()}
	if err != nil {
		out.exitCode = 1
		if !errors.Is(err, ErrCycle) {
			out.messages = append(out.messages, "FATAL: "+err.Error())
		}
	}
	out.files = readOutputs(t, filepath.Join(base, "lib", "modules", o.KernelVersion))
	return out
}

// captureSink records messages as "LEVEL: text" at the default verbosity.
type captureSink struct{ add func(string) }

func (s *captureSink) Init(logr.RuntimeInfo)  {}
func (s *captureSink) Enabled(level int) bool { return level == 0 }
func (s *captureSink) Info(_ int, msg string, _ ...any) {
	s.add("WARNING: " + msg)
}
func (s *captureSink) Error(_ error, msg string, _ ...any) { s.add("ERROR: " + msg) }
func (s *captureSink) WithValues(...any) logr.LogSink      { return s }
func (s *captureSink) WithName(string) logr.LogSink        { return s }

// readOutputs reads every depmod output present in dir.
func readOutputs(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for _, name := range OutputFiles() {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err)
		files[name] = data
	}
	return files
}

// compareRuns checks that both runs wrote the same files, byte for byte,
// and exited alike.
func compareRuns(t *testing.T, kmod, ours runOutcome) {
	t.Helper()
	if kmod.exitCode != ours.exitCode {
		t.Errorf("exit code: kmod %d, ours %d\nkmod: %s\nours: %s", kmod.exitCode, ours.exitCode,
			strings.Join(kmod.messages, "\n"), strings.Join(ours.messages, "\n"))
	}
	var names []string
	for n := range kmod.files {
		names = append(names, n)
	}
	for n := range ours.files {
		if _, ok := kmod.files[n]; !ok {
			t.Errorf("%s: written by us, not by kmod", n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		o, ok := ours.files[n]
		if !ok {
			t.Errorf("%s: written by kmod, not by us", n)
			continue
		}
		if !bytes.Equal(kmod.files[n], o) {
			t.Errorf("%s differs (kmod %d bytes, ours %d bytes)%s", n, len(kmod.files[n]), len(o), firstDiff(kmod.files[n], o))
		}
	}
	if !bytes.Equal(kmod.stdout, ours.stdout) {
		t.Errorf("stdout differs:%s", firstDiff(kmod.stdout, ours.stdout))
	}
}

// firstDiff describes where two outputs start to differ.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	ctx := func(x []byte) string {
		lo, hi := max(0, i-40), min(len(x), i+40)
		return fmt.Sprintf("%q", x[lo:hi])
	}
	return fmt.Sprintf(" at byte %d:\n  kmod: %s\n  ours: %s", i, ctx(a), ctx(b))
}

// messagesWith returns the messages containing s, sorted.
func messagesWith(msgs []string, s string) []string {
	var out []string
	for _, m := range msgs {
		if strings.Contains(m, s) {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// compareTree writes tr twice and runs both depmods with the same options.
func compareTree(t *testing.T, tr tree, o Options) (runOutcome, runOutcome) {
	t.Helper()
	kmod := kmodDepmod(t)
	if o.KernelVersion == "" {
		o.KernelVersion = "6.1.0-99-test"
	}
	if o.ConfigPaths == nil {
		o.ConfigPaths = []string{t.TempDir()}
	}
	baseK, baseO := t.TempDir(), t.TempDir()
	tr.write(t, baseK, o.KernelVersion)
	tr.write(t, baseO, o.KernelVersion)
	files := o.Files
	fix := func(base string) []string {
		var out []string
		for _, f := range files {
			out = append(out, filepath.Join(base, f))
		}
		return out
	}
	ko, oo := o, o
	ko.Files, oo.Files = fix(baseK), fix(baseO)
	k := runKmod(t, kmod, baseK, ko)
	us := runOurs(t, baseO, oo)
	compareRuns(t, k, us)
	return k, us
}
