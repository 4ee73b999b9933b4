package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"

	"github.com/kmmkit/kmmkit/internal/cli"
	"github.com/kmmkit/kmmkit/lint"
)

var imageLintHelp = help{
	Synopsis: "kmm image lint REF --kernel VERSION [flags]\n       kmm image lint --dir DIR --kernel VERSION [flags]",
	About: "Checks a kernel-module image for what breaks loading on a node of that kernel, and prints one finding per\n" +
		"line: FILE: RULE: what is wrong and what to do. REF is pulled (only its module tree, firmware and the usual\n" +
		"module directories, contained and verified); --dir reads an unpacked tree instead, such as / at the end of a\n" +
		"Dockerfile build (RUN kmm image lint --dir / --kernel ${KERNEL_FULL_VERSION}). Rules: layout (modules not\n" +
		"under <dir-name>/lib/modules/<kernel>), unreadable, vermagic-release, vermagic-flags (against --vermagic or\n" +
		"--kernel-tree, else among the image's modules), depmod-missing and depmod-stale (modules.dep and the other\n" +
		"indexes against what depmod writes now), dependency (a needed module neither in the image nor the node's,\n" +
		"cycles, symbol versions), module-missing (--module), firmware-missing (--firmware-path), unsigned and\n" +
		"signature (--signed, --signed-by).",
	Exit: "0 when nothing is found, 1 when something is (each finding printed), 2 when the image or the tree cannot be\n" +
		"read (the registry's reason: unauthorized, not found, unreachable, …) or on bad flags.",
}

// runImageLint implements "kmm image lint".
func runImageLint(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("kmm image lint", imageLintHelp)
	rf := addRegistryFlags(fs)
	kernel := fs.String("kernel", "", "the kernel the image is for, as in node.status.nodeInfo.kernelVersion (required)")
	dir := fs.String("dir", "", "lint the unpacked image at DIR (the directory holding <dir-name>/lib/modules) instead of pulling REF")
	dirName := fs.String("dir-name", "/opt", "the Module's modprobe.dirName")
	vermagic := fs.String("vermagic", "", `the kernel's whole vermagic ("6.1.0-57-amd64 SMP preempt mod_unload modversions "), to check the modules' flags`)
	kernelTree := fs.String("kernel-tree", "", "the kernel's own module tree (/lib/modules/<kernel>, or a root holding it): its vermagic and in-tree modules")
	firmwarePath := fs.String("firmware-path", "", "the Module's modprobe.firmwarePath: firmware modules declare must be there")
	signed := fs.Bool("signed", false, "every module must be signed")
	output := fs.String("o", "text", "output format: text or json")
	var modules, hostModules, keyIDs stringList
	fs.Var(&modules, "module", "a module the image must hold (the Module's moduleName; repeatable)")
	fs.Var(&hostModules, "host-module", "a module the image's modules may need that the node provides itself (repeatable)")
	fs.Var(&keyIDs, "signed-by", "the key id (modinfo's sig_key) every module must be signed by (repeatable; implies --signed)")
	operands, code, ok := cli.ParseInterspersed(fs, args, stdout, stderr)
	switch {
	case !ok:
		return code
	case *kernel == "":
		fmt.Fprintln(stderr, "kmm image lint: no kernel: give it with --kernel")
		return exitError
	case *output != "text" && *output != "json":
		fmt.Fprintf(stderr, "kmm image lint: unknown output format %q: use text or json\n", *output)
		return exitError
	case len(operands) > 1 || (len(operands) == 1 && *dir != ""):
		fmt.Fprintf(stderr, "kmm image lint: give one image reference, or --dir\n")
		return exitError
	case len(operands) == 0 && *dir == "":
		fmt.Fprintln(stderr, "kmm image lint: no image reference given (or --dir)")
		imageLintHelp.Write(stderr, fs)
		return exitError
	}
	opts := []lint.Option{lint.WithDirName(*dirName), lint.WithVermagic(*vermagic), lint.WithKernelTree(*kernelTree),
		lint.WithFirmwarePath(*firmwarePath), lint.WithModules(modules...), lint.WithHostModules(hostModules...)}
	if *signed || len(keyIDs) > 0 {
		opts = append(opts, lint.WithSigned(keyIDs...))
	}
	var rep *lint.Report
	var err error
	if *dir != "" {
		rep, err = lint.Tree(ctx, *dir, *kernel, opts...)
	} else {
		client, req, ok := rf.open("kmm image lint", operands[0], stderr)
		if !ok {
			return exitError
		}
		rep, err = lint.Image(ctx, client, req, *kernel, opts...)
	}
	if err != nil {
		fmt.Fprintf(stderr, "kmm image lint: %v\n", err)
		return exitError
	}
	if *output == "json" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "kmm image lint: %v\n", err)
			return exitError
		}
		fmt.Fprintf(stdout, "%s\n", data)
	} else {
		printLint(stdout, stderr, rep)
	}
	if !rep.OK() {
		return exitNo
	}
	return exitOK
}

// printLint prints the findings one per line, then a summary; notes go to
// stderr.
func printLint(stdout, stderr io.Writer, rep *lint.Report) {
	for _, f := range rep.Findings {
		fmt.Fprintln(stdout, f.String())
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(stderr, "kmm image lint: note: %s\n", n)
	}
	src := rep.Source
	if rep.Digest != "" {
		src += "@" + rep.Digest
	}
	if rep.OK() {
		fmt.Fprintf(stdout, "%s: %s\n", src, rep.Summary(0))
	} else {
		fmt.Fprintf(stdout, "%s: %d finding(s), %d module(s) for %s under %s\n", src, len(rep.Findings), len(rep.Modules), rep.Kernel, rep.ModuleDir)
	}
	type signer struct{ key, name, hash string }
	count := map[signer]int{}
	for _, m := range rep.Modules {
		if s := m.Signature; s != nil {
			count[signer{s.KeyID, s.Signer, s.Hash}]++
		}
	}
	keys := make([]signer, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].key < keys[j].key })
	for _, k := range keys {
		fmt.Fprintf(stdout, "%s: %d module(s) signed by key %s (signer %q, %s)\n", src, count[k], k.key, k.name, k.hash)
	}
}
