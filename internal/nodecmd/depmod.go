package nodecmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/go-logr/logr"

	"github.com/kmmkit/kmmkit/depmod"
	"github.com/kmmkit/kmmkit/loader/node"
)

const depmodUsage = `Usage: kmm depmod [options] [forced_version] [module files...]

A drop-in for kmod's depmod: same flags, same output files, byte for byte.

Options:
	-a, --all            Probe all modules (the default)
	-A, --quick          Only do the work if a module is newer than modules.dep
	-e, --errsyms        Report unknown symbols and version mismatches (needs -E or -F)
	-n, --show           Write the dependency file on stdout only
	-P, --symbol-prefix  Architecture symbol prefix
	-C, --config=PATH    Read configuration from PATH (file or directory; repeatable)
	-v, --verbose        More messages (repeatable)
	-w, --warn           Warn on duplicate index values
	-V, --version        Show the version
	-h, --help           Show this help

	-b, --basedir=DIR    Use an image of a module tree
	-o, --outdir=DIR     Write the output files under DIR/lib/modules/<version>
	-F, --filesyms=FILE  Use FILE as the kernel symbol table (System.map)
	-E, --symvers=FILE   Use Module.symvers for symbol versions

Unlike kmod, the ten files are replaced together or not at all, and memory
is bounded: a module over 512 MiB (on disk or decompressed), a zstd window
or xz dictionary over 128 MiB is reported and skipped like any unreadable
module, before anything it declares is allocated.

Exit status: 0 on success (and for -h and -V), 1 on any failure, as kmod's depmod.
`

// depmodOption describes one flag: its short letter, long name and
// whether it takes an argument.
type depmodOption struct {
	short byte
	long  string
	arg   bool
}

var depmodOptions = []depmodOption{
	{'a', "all", false}, {'A', "quick", false}, {'b', "basedir", true}, {'o', "outdir", true},
	{'C', "config", true}, {'E', "symvers", true}, {'F', "filesyms", true}, {'e', "errsyms", false},
	{'u', "unresolved-error", false}, {'q', "quiet", false}, {'r', "root", false}, {'v', "verbose", false},
	{'n', "show", false}, {'n', "dry-run", false}, {'P', "symbol-prefix", true}, {'w', "warn", false},
	{'m', "map", false}, {'V', "version", false}, {'h', "help", false},
}

// parsedOption is one option occurrence.
type parsedOption struct {
	short byte
	value string
}

// parseDepmodArgs parses the arguments the way GNU getopt_long does for
// depmod: options may follow operands, short options may be grouped and
// take their argument attached or as the next word, "--" ends options.
func parseDepmodArgs(args []string) ([]parsedOption, []string, error) {
	var opts []parsedOption
	var operands []string
	find := func(short byte, long string) (depmodOption, bool) {
		for _, o := range depmodOptions {
			if (short != 0 && o.short == short) || (long != "" && o.long == long) {
				return o, true
			}
		}
		return depmodOption{}, false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			return opts, operands, nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			o, ok := find(0, name)
			if !ok {
				return nil, nil, fmt.Errorf("unrecognized option '%s'", a)
			}
			if o.arg && !hasVal {
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("option '--%s' requires an argument", name)
				}
				i++
				val = args[i]
			} else if !o.arg && hasVal {
				return nil, nil, fmt.Errorf("option '--%s' doesn't allow an argument", name)
			}
			opts = append(opts, parsedOption{short: o.short, value: val})
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				o, ok := find(a[j], "")
				if !ok {
					return nil, nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				if !o.arg {
					opts = append(opts, parsedOption{short: o.short})
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					i++
					val = args[i]
				}
				opts = append(opts, parsedOption{short: o.short, value: val})
				break
			}
		default:
			operands = append(operands, a)
		}
	}
	return opts, operands, nil
}

// Depmod runs "kmm depmod ARGS" (and kmm installed as depmod): kmod's
// depmod, with its flags, output files and exit statuses (1 on any
// failure).
func Depmod(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	parsed, operands, err := parseDepmodArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "kmm depmod: %v\n%s", err, depmodUsage)
		return 1
	}
	var o depmod.Options
	all, verbosity := false, 0
	for _, p := range parsed {
		switch p.short {
		case 'a':
			all = true
		case 'A':
			o.Quick = true
		case 'b':
			o.BaseDir = p.value
			if !strings.HasPrefix(o.BaseDir, "/") {
				if wd, err := os.Getwd(); err == nil {
					o.BaseDir = wd + "/" + o.BaseDir
				}
			}
		case 'o':
			o.OutDir = p.value
		case 'C':
			o.ConfigPaths = append(o.ConfigPaths, p.value)
		case 'E':
			o.Symvers = p.value
		case 'F':
			o.SystemMap = p.value
		case 'e':
			o.ErrSyms = true
		case 'n':
			o.DryRun = stdout
		case 'P':
			if len(p.value) != 1 {
				fmt.Fprintf(stderr, "depmod: FATAL: -P only takes a single char\n")
				return 1
			}
			o.SymbolPrefix = p.value[0]
		case 'w':
			o.WarnDuplicates = true
		case 'v':
			verbosity++
		case 'u', 'q', 'r', 'm':
			fmt.Fprintf(stderr, "depmod: WARNING: Ignored deprecated option -%c\n", p.short)
		case 'V':
			fmt.Fprintln(stdout, "kmm depmod (kmmkit), compatible with kmod version 30")
			return 0
		case 'h':
			fmt.Fprint(stdout, depmodUsage)
			return 0
		}
	}
	if o.Symvers != "" && o.SystemMap != "" {
		o.SystemMap = ""
	}
	if len(operands) > 0 {
		o.KernelVersion = operands[0]
		operands = operands[1:]
	} else {
		rel, err := node.LinuxKernel{}.Release()
		if err != nil {
			fmt.Fprintf(stderr, "depmod: FATAL: uname: %v\n", err)
			return 1
		}
		o.KernelVersion = rel
	}
	if !all && len(operands) > 0 {
		o.Files = operands
	}
	o.Log = logr.New(&kmodLogSink{w: stderr, verbosity: verbosity})
	if os.Getenv("GOGC") == "" {
		// depmod holds a whole tree's symbols for a fraction of a second;
		// collecting more often keeps its peak memory below kmod's for a
		// few percent more CPU time.
		debug.SetGCPercent(50)
	}

	res, err := depmod.Run(ctx, o)
	switch {
	case errors.Is(err, depmod.ErrCycle):
		return 1
	case err != nil && strings.HasPrefix(err.Error(), "Bad version passed"):
		fmt.Fprintf(stderr, "depmod: ERROR: %v\n", err)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "depmod: FATAL: %v\n", err)
		return 1
	}
	if res.UpToDate && verbosity > 0 {
		fmt.Fprintf(stderr, "depmod: INFO: %s/modules.dep is up to date\n", res.OutputDir)
	}
	return 0
}

// kmodLogSink prints depmod's messages the way kmod does:
// "depmod: LEVEL: message" on standard error.
type kmodLogSink struct {
	mu        sync.Mutex
	w         io.Writer
	verbosity int
}

// Init implements logr.LogSink.
func (s *kmodLogSink) Init(logr.RuntimeInfo) {}

// Enabled implements logr.LogSink: -v raises the level shown.
func (s *kmodLogSink) Enabled(level int) bool { return level <= s.verbosity }

// Info implements logr.LogSink.
func (s *kmodLogSink) Info(level int, msg string, _ ...any) {
	name := "WARNING"
	switch {
	case level >= depmod.LevelDebug:
		name = "DEBUG"
	case level == depmod.LevelInfo:
		name = "INFO"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "depmod: %s: %s\n", name, msg)
}

// Error implements logr.LogSink.
func (s *kmodLogSink) Error(_ error, msg string, _ ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.w, "depmod: ERROR: %s\n", msg)
}

// WithValues implements logr.LogSink; values are not printed.
func (s *kmodLogSink) WithValues(...any) logr.LogSink { return s }

// WithName implements logr.LogSink; names are not printed.
func (s *kmodLogSink) WithName(string) logr.LogSink { return s }
