// Package cli holds what kmmkit's command lines (cmd/kmm, cmd/kmm-worker)
// share: the help every command prints for -h (how to call it, what it
// does, its flags and what its exit status means), flag parsing that
// prints asked-for help on standard output with exit status 0 and a bad
// flag on standard error with 2, subcommand checks, the exit statuses,
// the logger and the version line.
package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// Exit statuses of kmmkit's commands (depmod keeps kmod's).
const (
	// ExitOK is success.
	ExitOK = 0
	// ExitNo is a "no" answer: no kernel mapping matches, a manifest is
	// invalid, an image does not exist.
	ExitNo = 1
	// ExitError is a usage error or any other error.
	ExitError = 2
)

// Help is what -h prints for a command: how to call it, what it does and
// what its exit status means.
type Help struct {
	Synopsis string // "kmm validate -f FILE [--path PATH]"
	About    string // one or more sentences
	Exit     string // "0 when …, 1 when …, 2 on …"
}

// Write prints h, with the flags of fs when it has any.
func (h Help) Write(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", h.Synopsis, h.About)
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
	fmt.Fprintf(w, "\nexit status: %s\n", h.Exit)
}

// NewFlagSet returns the flag set of a command whose usage is h.
func NewFlagSet(name string, h Help) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { h.Write(fs.Output(), fs) }
	return fs
}

// ParseFlags parses args. Asked for with -h or --help, the help goes to
// stdout and the command exits 0; a bad flag is reported with the help on
// stderr, exit 2. ok says the command goes on.
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (code int, ok bool) {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = stdout.Write(buf.Bytes())
		return ExitOK, false
	case err != nil:
		_, _ = stderr.Write(buf.Bytes())
		return ExitError, false
	}
	return ExitOK, true
}

// ParseInterspersed parses args whose flags may come before, between and
// after the operands (as cobra's and getopt's commands take them), as
// ParseFlags does, and returns the operands.
func ParseInterspersed(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (operands []string, code int, ok bool) {
	for {
		if code, ok := ParseFlags(fs, args, stdout, stderr); !ok {
			return nil, code, false
		}
		if fs.NArg() == 0 {
			return operands, ExitOK, true
		}
		operands = append(operands, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// Subcommand checks the first argument of a command that has
// subcommands: help prints h on stdout (exit 0); none or an unknown one
// prints h on stderr (exit 2). ok says args[0] is one of subs.
func Subcommand(name string, h Help, args []string, subs []string, stdout, stderr io.Writer) (code int, ok bool) {
	switch {
	case len(args) == 0:
		h.Write(stderr, nil)
		return ExitError, false
	case IsHelp(args[0]):
		h.Write(stdout, nil)
		return ExitOK, false
	case !slices.Contains(subs, args[0]):
		fmt.Fprintf(stderr, "%s: unknown command %q\n\n", name, args[0])
		h.Write(stderr, nil)
		return ExitError, false
	}
	return ExitOK, true
}

// IsHelp says whether an argument asks for help.
func IsHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// NewLogger returns a logger writing to w up to verbosity v; v <= 0
// discards everything.
func NewLogger(w io.Writer, v int) logr.Logger {
	if v <= 0 {
		return logr.Discard()
	}
	return funcr.New(func(prefix, args string) {
		fmt.Fprintln(w, args)
	}, funcr.Options{Verbosity: v})
}

// Version says which program this is and what built it: version when set
// (release builds set it with -ldflags "-X main.version=v1.2.3"), else
// the module version of the build (go install …@v1.2.3) or "devel" and
// the VCS revision.
func Version(program, version string) string {
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
	return fmt.Sprintf("%s %s (%s %s/%s)", program, v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
