package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// runValidate implements "kmm validate".
func runValidate(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kmm validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "manifest holding one or more Modules (YAML or JSON; - for standard input)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kmm validate -f MODULE.yaml\n\nChecks every Module of the manifest and prints each problem with its field path.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm validate: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	modules, err := readModules(*file, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kmm validate: %v\n", err)
		return exitError
	}
	code := exitOK
	for i := range modules {
		m := &modules[i]
		errs := v1beta1.Validate(m)
		if len(errs) == 0 {
			fmt.Fprintf(stdout, "Module %s/%s: valid\n", m.Namespace, m.Name)
			continue
		}
		code = exitNo
		fmt.Fprintf(stdout, "Module %s/%s: %d problem(s)\n", m.Namespace, m.Name, len(errs))
		for _, e := range errs {
			fmt.Fprintf(stdout, "  %s\n", e.Error())
		}
	}
	return code
}

// flagExit maps a flag parsing error to an exit status: -h is a success.
func flagExit(err error) int {
	if err == flag.ErrHelp {
		return exitOK
	}
	return exitError
}
