package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
)

// help is what -h prints for a command: how to call it, what it does and
// what its exit status means.
type help struct {
	synopsis string // "kmm validate -f FILE [--path PATH]"
	about    string // one or more sentences
	exit     string // "0 when …, 1 when …, 2 on …"
}

// write prints h, with the flags of fs when it has any.
func (h help) write(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", h.synopsis, h.about)
	if fs != nil {
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			out := fs.Output()
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(out)
		}
	}
	fmt.Fprintf(w, "\nexit status: %s\n", h.exit)
}

// newFlagSet returns the flag set of a command whose usage is h.
func newFlagSet(name string, h help) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { h.write(fs.Output(), fs) }
	return fs
}

// parseFlags parses args. Asked for with -h or --help, the help goes to
// stdout and the command exits 0; a bad flag is reported with the help on
// stderr, exit 2. ok says the command goes on.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = stdout.Write(buf.Bytes())
		return exitOK, false
	case err != nil:
		_, _ = stderr.Write(buf.Bytes())
		return exitError, false
	}
	return exitOK, true
}

// subcommand checks the first argument of a command that has
// subcommands: help prints h on stdout (exit 0); none or an unknown one
// prints h on stderr (exit 2). ok says args[0] is one of subs.
func subcommand(name string, h help, args []string, subs []string, stdout, stderr io.Writer) (code int, ok bool) {
	switch {
	case len(args) == 0:
		h.write(stderr, nil)
		return exitError, false
	case isHelp(args[0]):
		h.write(stdout, nil)
		return exitOK, false
	case !slices.Contains(subs, args[0]):
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n", name, args[0])
		h.write(stderr, nil)
		return exitError, false
	}
	return exitOK, true
}

// isHelp says whether an argument asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// version is kmm's version; release builds set it with
// -ldflags "-X main.version=v1.2.3". Empty, the module version of the
// build (go install …@v1.2.3) or the VCS revision is printed.
var version string

// versionString says which kmm this is and what built it.
func versionString() string {
	v := version
	info, ok := debug.ReadBuildInfo()
	if v == "" && ok {
		v = info.Main.Version
	}
	if v == "" || v == "(devel)" {
		v = "devel"
		if ok {
			var rev, modified string
			for _, s := range info.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value
				}
			}
			if len(rev) > 12 {
				rev = rev[:12]
			}
			if rev != "" {
				v += "+" + rev
				if modified == "true" {
					v += "-dirty"
				}
			}
		}
	}
	return fmt.Sprintf("kmm %s (%s %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// versionHelp is the help of "kmm version".
var versionHelp = help{
	synopsis: "kmm version   (or kmm --version)",
	about:    "Prints kmm's version and the Go version and platform it was built for.",
	exit:     "0.",
}

// runVersion implements "kmm version".
func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("kmm version", versionHelp)
	if code, ok := parseFlags(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kmm version: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	fmt.Fprintln(stdout, versionString())
	return exitOK
}
