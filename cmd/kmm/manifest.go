package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// maxManifestSize bounds how much of a manifest is read.
const maxManifestSize = 16 << 20

// readManifest reads the manifest at path ("-" is stdin), bounded.
func readManifest(path string, stdin io.Reader) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("no manifest: give one with -f FILE (or -f - for standard input)")
	}
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxManifestSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxManifestSize)
	}
	return data, nil
}

// readModules reads the Modules of the manifest at path. Any problem of
// any document is an error that lists them all.
func readModules(path string, stdin io.Reader) ([]v1beta1.Module, error) {
	return readModulesAnd(path, stdin, nil)
}

// readModulesAnd is readModules that also hands every other object to
// other, whose problems are listed with the Modules'.
func readModulesAnd(path string, stdin io.Reader, other func(*v1beta1.ManifestObject) field.ErrorList) ([]v1beta1.Module, error) {
	data, err := readManifest(path, stdin)
	if err != nil {
		return nil, err
	}
	var modules []v1beta1.Module
	var problems []string
	objs := v1beta1.ReadManifest(data)
	for i := range objs {
		o := &objs[i]
		if o.Err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where(o), o.Err))
			continue
		}
		if !o.IsModule() {
			if other != nil {
				if errs := other(o); len(errs) > 0 {
					problems = append(problems, fmt.Sprintf("%s %s:", label(o), where(o)))
					for _, l := range problemLines(o, errs) {
						problems = append(problems, "  "+l)
					}
				}
			}
			continue
		}
		m, errs := o.Module()
		if len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("%s %s:", label(o), where(o)))
			for _, l := range problemLines(o, errs) {
				problems = append(problems, "  "+l)
			}
			continue
		}
		modules = append(modules, *m)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s:\n  %s", path, strings.Join(problems, "\n  "))
	}
	if len(modules) == 0 {
		return nil, fmt.Errorf("%s: %w", path, v1beta1.ErrNoModule)
	}
	return modules, nil
}

// label names an object: "Module drivers/nic".
func label(o *v1beta1.ManifestObject) string {
	kind := o.Kind
	if kind == "" {
		kind = "object"
	}
	switch {
	case o.Name == "":
		return kind + " (unnamed)"
	case o.Namespace == "":
		return kind + " " + o.Name
	}
	return kind + " " + o.Namespace + "/" + o.Name
}

// where says where an object is in the stream: "(document 2, line 14)".
func where(o *v1beta1.ManifestObject) string {
	if o.Item >= 0 {
		return fmt.Sprintf("(document %d, items[%d], line %d)", o.Document, o.Item, o.Line)
	}
	return fmt.Sprintf("(document %d, line %d)", o.Document, o.Line)
}

// problemLines renders field errors as "line N: error", in the order of
// their lines.
func problemLines(o *v1beta1.ManifestObject, errs field.ErrorList) []string {
	type line struct {
		n   int
		msg string
	}
	lines := make([]line, len(errs))
	for i, e := range errs {
		lines[i] = line{o.LineOf(e.Field), e.Error()}
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].n < lines[j].n })
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = fmt.Sprintf("line %d: %s", l.n, l.msg)
	}
	return out
}

// selectModule picks the Module called name, or the only one when name is
// empty.
func selectModule(modules []v1beta1.Module, name, path string) (*v1beta1.Module, error) {
	if name == "" {
		if len(modules) > 1 {
			names := make([]string, len(modules))
			for i := range modules {
				names[i] = modules[i].Name
			}
			return nil, fmt.Errorf("%s holds %d Modules %v: choose one with --module", path, len(modules), names)
		}
		return &modules[0], nil
	}
	for i := range modules {
		if modules[i].Name == name {
			return &modules[i], nil
		}
	}
	return nil, fmt.Errorf("%s has no Module named %q", path, name)
}
