// Package kmmconformance runs kmmkit's conformance tables: one line per
// test case of KMM's own unit tests (kubernetes-sigs/kernel-module-management),
// taken as a fact (inputs and KMM's expected outcome) and checked against
// kmmkit. A line either agrees with KMM, or names the entry of the README's
// "Deliberate differences from KMM" that explains why kmmkit does
// otherwise; its check then asserts kmmkit's behaviour.
package kmmconformance

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Case is one KMM test case.
type Case struct {
	// KMM names KMM's test: its file and the Describe / It (or Entry)
	// text, as "internal/worker/worker_test.go: worker_LoadKmod: should
	// use rawArgs if they are defined".
	KMM string
	// Differs is empty when kmmkit agrees with KMM. Otherwise it is the
	// title of the README's "Deliberate differences from KMM" entry that
	// explains the difference, which must exist.
	Differs string
	// Check asserts kmmkit's outcome.
	Check func(t *testing.T)
}

// Run runs every case as a subtest named after KMM's test, checks that
// every difference refers to an entry of the README, and logs how many
// cases agree and differ.
func Run(t *testing.T, cases []Case) {
	t.Helper()
	entries := differences(t)
	agree, differ := 0, 0
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.KMM] {
			t.Errorf("KMM case %q listed twice", c.KMM)
		}
		seen[c.KMM] = true
		if c.Differs == "" {
			agree++
		} else {
			differ++
			if !entries[c.Differs] {
				t.Errorf("%s: the README has no deliberate difference titled %q", c.KMM, c.Differs)
			}
		}
		t.Run(c.KMM, c.Check)
	}
	t.Logf("%d KMM cases: %d agree, %d differ deliberately", len(cases), agree, differ)
}

// differences returns the titles of the README's deliberate differences:
// the bold text that opens each bullet of the section.
func differences(t *testing.T) map[string]bool {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var readme []byte
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if readme, err = os.ReadFile(filepath.Join(dir, "README.md")); err != nil {
				t.Fatal(err)
			}
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
	_, section, ok := bytes.Cut(readme, []byte("## Deliberate differences from KMM"))
	if !ok {
		t.Fatal(`README.md has no "## Deliberate differences from KMM" section`)
	}
	if end := bytes.Index(section, []byte("\n## ")); end >= 0 {
		section = section[:end]
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(section), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "- **")
		if !ok {
			continue
		}
		if title, _, ok := strings.Cut(rest, "**"); ok {
			out[strings.TrimSuffix(title, ".")] = true
		}
	}
	return out
}
