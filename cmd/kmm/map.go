package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/kernelmap"
	"github.com/kmmkit/kmmkit/kmm/v1beta1"
)

// stringList is a repeatable flag; each use may also hold a comma-separated
// list.
type stringList []string

// String implements flag.Value.
func (s *stringList) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

// mapResult is what "kmm map" prints for one kernel.
type mapResult struct {
	Kernel    string            `json:"kernel"`
	Matched   bool              `json:"matched"`
	Record    *kernelmap.Record `json:"record,omitempty"`
	NoMapping string            `json:"noMapping,omitempty"`
	Error     string            `json:"error,omitempty"`
}

var mapHelp = help{
	Synopsis: "kmm map -f MODULE.yaml --kernel VERSION [--kernel VERSION ...] [-o yaml|json]",
	About:    "Finds the kernel mapping of the Module for each kernel as KMM does and prints the resolved record.",
	Exit:     "0 when every kernel has a mapping, 1 when some kernel has none, 2 on errors (an invalid Module, say).",
}

// runMap implements "kmm map".
func runMap(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm map", mapHelp)
	file := fs.String("f", "", "manifest holding the Module (YAML or JSON; - for standard input)")
	moduleName := fs.String("module", "", "name of the Module to use when the manifest holds several")
	output := fs.String("o", "yaml", "output format: yaml or json")
	skipValidation := fs.Bool("skip-validation", false, "map even when the Module breaks validation rules")
	verbosity := fs.Int("v", 0, "log verbosity on standard error (2 logs each mapping decision)")
	var kernels stringList
	fs.Var(&kernels, "kernel", "node kernel version, as in node.status.nodeInfo.kernelVersion (repeatable, or comma-separated)")
	if code, ok := cli.ParseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm map: unexpected argument %q (give kernels with --kernel)\n", fs.Arg(0))
		return exitError
	}
	if len(kernels) == 0 {
		fmt.Fprintln(stderr, "kmm map: no kernel: give at least one with --kernel")
		return exitError
	}
	if *output != "yaml" && *output != "json" {
		fmt.Fprintf(stderr, "kmm map: unknown output format %q: use yaml or json\n", *output)
		return exitError
	}
	modules, err := readModules(*file, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "kmm map: %v\n", err)
		return exitError
	}
	module, err := selectModule(modules, *moduleName, *file)
	if err != nil {
		fmt.Fprintf(stderr, "kmm map: %v\n", err)
		return exitError
	}
	if !*skipValidation {
		if errs := v1beta1.Validate(module); len(errs) > 0 {
			fmt.Fprintf(stderr, "kmm map: Module %s/%s is invalid (use --skip-validation to map it anyway):\n", module.Namespace, module.Name)
			for _, e := range errs {
				fmt.Fprintf(stderr, "  %s\n", e.Error())
			}
			return exitError
		}
	}

	mapper, err := kernelmap.New(kernelmap.WithLogger(cli.NewLogger(stderr, *verbosity)))
	if err != nil {
		fmt.Fprintf(stderr, "kmm map: %v\n", err)
		return exitError
	}
	res, resolveErr := mapper.ResolveAll(module, kernels)
	if res == nil {
		fmt.Fprintf(stderr, "kmm map: Module %s/%s: %v\n", module.Namespace, module.Name, resolveErr)
		return exitError
	}
	results := make([]mapResult, 0, len(kernels))
	code := exitOK
	for _, k := range kernels {
		r := mapResult{Kernel: k}
		if rec, ok := res.Records[k]; ok {
			r.Matched, r.Record = true, rec
		} else if err, ok := res.Failed[k]; ok {
			r.Error = err.Error()
		} else {
			r.NoMapping = fmt.Sprintf("no kernel mapping of Module %s/%s matches kernel %q", module.Namespace, module.Name, k)
			code = exitNo
		}
		results = append(results, r)
	}
	if err := printResults(stdout, *output, results); err != nil {
		fmt.Fprintf(stderr, "kmm map: %v\n", err)
		return exitError
	}
	if resolveErr != nil {
		fmt.Fprintf(stderr, "kmm map: %v\n", resolveErr)
		return exitError
	}
	return code
}

// printResults writes the results: one object for one kernel, a list for
// several.
func printResults(w io.Writer, format string, results []mapResult) error {
	var v any = results
	if len(results) == 1 {
		v = results[0]
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if data, err = yaml.JSONToYAML(data); err != nil {
			return err
		}
	} else {
		data = append(data, '\n')
	}
	_, err = w.Write(data)
	return err
}
