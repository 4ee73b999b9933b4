package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

var validateHelp = help{
	Synopsis: "kmm validate -f FILE [--path FIELD [--embedded]]",
	About: "Checks every Module of a manifest (YAML or JSON, one or many documents, or a List) against every rule of\n" +
		"KMM's admission webhook and CRD schema, and reports every document: each problem with its field path and\n" +
		"line — unknown fields (with the nearest known name), duplicate keys, values of the wrong type, rule\n" +
		"violations. A document that cannot be read is reported and the next one is still checked.\n\n" +
		"With --path, it checks instead the module spec at that field of every object, of any kind (an operator's\n" +
		"own resource that embeds a ModuleSpec at spec.module, say), decoding it strictly as a ModuleSpec, or with\n" +
		"--embedded as an EmbeddedModuleSpec (no devicePlugin or dra), and reports problems under that path.",
	Exit: "0 when every object checked is valid, 1 when one is not (or a document cannot be read),\n" +
		"2 when the manifest cannot be read, holds nothing to check, or the flags are wrong.",
}

// runValidate implements "kmm validate".
func runValidate(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm validate", validateHelp)
	file := fs.String("f", "", "manifest to check (YAML or JSON; - for standard input)")
	path := fs.String("path", "", "check the module spec at this field of every object, as spec.module or spec.modules[0]")
	embedded := fs.Bool("embedded", false, "with --path: the spec is a v1beta1.EmbeddedModuleSpec, without devicePlugin and dra")
	if code, ok := cli.ParseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm validate: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	if *embedded && *path == "" {
		fmt.Fprintln(stderr, "kmm validate: --embedded needs --path (the field that holds the spec)")
		return exitError
	}
	data, err := readManifest(*file, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kmm validate: %v\n", err)
		return exitError
	}
	code, checked := exitOK, 0
	objs := v1beta1.ReadManifest(data)
	for i := range objs {
		o := &objs[i]
		if o.Err != nil {
			fmt.Fprintf(stdout, "document %d (line %d): %v\n", o.Document, o.Line, o.Err)
			code = exitNo
			continue
		}
		var errs field.ErrorList
		if *path != "" {
			var found bool
			if errs, found = checkSpecAt(o, *path, *embedded); !found {
				fmt.Fprintf(stdout, "%s: skipped (no %s)\n", label(o), *path)
				continue
			}
		} else {
			if !o.IsModule() {
				fmt.Fprintf(stdout, "%s: skipped (not a Module)\n", label(o))
				continue
			}
			m, decodeErrs := o.Module()
			errs = decodeErrs
			if m != nil {
				errs = append(errs, withoutConsequences(v1beta1.Validate(m), decodeErrs)...)
			}
		}
		checked++
		if len(errs) == 0 {
			fmt.Fprintf(stdout, "%s: valid\n", label(o))
			continue
		}
		code = exitNo
		fmt.Fprintf(stdout, "%s %s: %d problem(s)\n", label(o), where(o), len(errs))
		for _, l := range problemLines(o, errs) {
			fmt.Fprintf(stdout, "  %s\n", l)
		}
	}
	if checked == 0 && code == exitOK {
		if *path != "" {
			fmt.Fprintf(stderr, "kmm validate: %s: no object has %s\n", *file, *path)
		} else {
			fmt.Fprintf(stderr, "kmm validate: %s: %v\n", *file, v1beta1.ErrNoModule)
		}
		return exitError
	}
	return code
}

// checkSpecAt decodes and validates the spec at path of o; found is false
// when o has nothing there.
func checkSpecAt(o *v1beta1.ManifestObject, path string, embedded bool) (errs field.ErrorList, found bool) {
	if embedded {
		spec, at, decodeErrs := o.EmbeddedSpecAt(path)
		if at == nil {
			return nil, false
		}
		return append(decodeErrs, withoutConsequences(v1beta1.ValidateEmbeddedSpec(spec, at), decodeErrs)...), true
	}
	spec, at, decodeErrs := o.ModuleSpecAt(path)
	if at == nil {
		return nil, false
	}
	return append(decodeErrs, withoutConsequences(v1beta1.ValidateSpec(spec, at), decodeErrs)...), true
}

// withoutConsequences drops the validation errors at or under a field
// whose value had the wrong type: decoding left it empty, so "Required"
// there would only repeat the decoding error.
func withoutConsequences(validation, decoding field.ErrorList) field.ErrorList {
	var out field.ErrorList
	for _, v := range validation {
		consequence := false
		for _, d := range decoding {
			if d.Type == field.ErrorTypeTypeInvalid &&
				(v.Field == d.Field || strings.HasPrefix(v.Field, d.Field+".") || strings.HasPrefix(v.Field, d.Field+"[")) {
				consequence = true
				break
			}
		}
		if !consequence {
			out = append(out, v)
		}
	}
	return out
}
