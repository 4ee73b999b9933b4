// Package modprobe reads a modprobe command line as kmod's modprobe (kmod
// 30) reads it — GNU getopt_long with option permutation, clustered short
// options, unique prefixes of long options, "--" — and tells what it asks
// for: load or remove, which modules, which parameters, which module
// root. Options the native worker cannot honour are errors naming the
// option and why, so that validation refuses them before a worker runs.
package modprobe

import (
	"fmt"
	"strings"
)

// Command is a parsed modprobe command line.
type Command struct {
	// Remove is -r: every name is a module to remove.
	Remove bool
	// All is -a: every name is a module to load, without parameters.
	All bool
	// FirstTime is --first-time: fail when there is nothing to do.
	FirstTime bool
	// Verbose counts -v; Quiet is -q. They change only what is logged.
	Verbose int
	Quiet   bool
	// Dir is -d's value, the root that holds lib/modules; "" when the
	// command has no -d (modprobe then uses the running system's
	// /lib/modules).
	Dir string
	// DirAt and RemoveAt are the indexes of the words that set Dir and
	// Remove (the last ones), or -1.
	DirAt, RemoveAt int
	// Names are the modules to load or remove.
	Names []Word
	// Params are the parameters of the one module loaded without -a: the
	// words after its name.
	Params []Word
}

// Word is a word of the command line and its index.
type Word struct {
	Value string
	At    int
}

// Values returns the words' values (nil for none).
func Values(words []Word) []string {
	var out []string
	for _, w := range words {
		out = append(out, w.Value)
	}
	return out
}

// Error is one word of a command line that cannot be run.
type Error struct {
	// At is the index of the word.
	At int
	// Option is the option as written ("-n", "--dry-run"); "" when the
	// word is not an option.
	Option string
	// Reason says why.
	Reason string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Option == "" {
		return e.Reason
	}
	return fmt.Sprintf("modprobe option %s: %s", e.Option, e.Reason)
}

// kind is what an option does.
type kind int

const (
	optAll kind = iota
	optRemove
	optFirstTime
	optVerbose
	optQuiet
	optDir
	optNoEffect // accepted; changes nothing here (said in why)
	optRefused  // refused, for the reason in why
)

// option is one of modprobe's options.
type option struct {
	short byte
	long  []string
	kind  kind
	// arg tells whether the option takes a value.
	arg bool
	why string
}

const (
	whyQuery   = "it only prints or looks up; nothing would be loaded or removed, yet the worker would report success"
	whyForce   = "forcing past the kernel's version checks is not supported; build the module against the node's kernel"
	whyNoConf  = "the worker reads no modprobe.d configuration; use modulesLoadingOrder for the load order and parameters for module options"
	whyVersion = "the worker always uses the node's kernel (the config's kernelVersion); another version is not supported"
)

// options are kmod 30's modprobe options (tools/modprobe.c).
var options = []option{
	{short: 'a', long: []string{"all"}, kind: optAll},
	{short: 'r', long: []string{"remove"}, kind: optRemove},
	{long: []string{"remove-dependencies", "remove-holders"}, kind: optRefused, why: "removing the modules that hold a module is not supported; list them in the unload arguments"},
	{short: 'w', long: []string{"wait"}, kind: optRefused, arg: true, why: "waiting for a module in use to be released is not supported"},
	{short: 'R', long: []string{"resolve-alias"}, kind: optRefused, why: whyQuery},
	{long: []string{"first-time"}, kind: optFirstTime},
	{short: 'i', long: []string{"ignore-install", "ignore-remove"}, kind: optNoEffect, why: "the worker reads no modprobe.d, so there are no install or remove commands to ignore"},
	{short: 'b', long: []string{"use-blacklist"}, kind: optNoEffect, why: "the worker reads no modprobe.d, so there is no blacklist"},
	{short: 'f', long: []string{"force"}, kind: optRefused, why: whyForce},
	{long: []string{"force-modversion"}, kind: optRefused, why: whyForce},
	{long: []string{"force-vermagic"}, kind: optRefused, why: whyForce},
	{short: 'D', long: []string{"show-depends"}, kind: optRefused, why: whyQuery},
	{short: 'c', long: []string{"showconfig", "show-config"}, kind: optRefused, why: whyQuery},
	{long: []string{"show-modversions", "dump-modversions"}, kind: optRefused, why: whyQuery},
	{long: []string{"show-exports"}, kind: optRefused, why: whyQuery},
	{short: 'n', long: []string{"dry-run", "show"}, kind: optRefused, why: whyQuery},
	{short: 'C', long: []string{"config"}, kind: optRefused, arg: true, why: whyNoConf},
	{short: 'd', long: []string{"dirname"}, kind: optDir, arg: true},
	{short: 'S', long: []string{"set-version"}, kind: optRefused, arg: true, why: whyVersion},
	{short: 's', long: []string{"syslog"}, kind: optNoEffect, why: "the worker logs to its container log"},
	{short: 'q', long: []string{"quiet"}, kind: optQuiet},
	{short: 'v', long: []string{"verbose"}, kind: optVerbose},
	{short: 'V', long: []string{"version"}, kind: optRefused, why: whyQuery},
	{short: 'h', long: []string{"help"}, kind: optRefused, why: whyQuery},
}

// NoEffect lists the accepted options that change nothing for the native
// worker, with why, for documentation and logs.
func NoEffect() map[string]string {
	out := map[string]string{}
	for _, o := range options {
		if o.kind == optNoEffect {
			out[o.display()] = o.why
		}
	}
	return out
}

// display names an option as "-b (--use-blacklist)".
func (o *option) display() string {
	var names []string
	if o.short != 0 {
		names = append(names, "-"+string(o.short))
	}
	for _, l := range o.long {
		names = append(names, "--"+l)
	}
	if len(names) == 1 {
		return names[0]
	}
	return names[0] + " (" + strings.Join(names[1:], ", ") + ")"
}

func shortOption(c byte) *option {
	for i := range options {
		if options[i].short == c {
			return &options[i]
		}
	}
	return nil
}

// longOption finds a long option by its name or, as getopt_long does, by
// a prefix that names one option only.
func longOption(name string) (*option, error) {
	var found *option
	for i := range options {
		for _, l := range options[i].long {
			if l == name {
				return &options[i], nil
			}
			if strings.HasPrefix(l, name) {
				if found != nil && found != &options[i] {
					return nil, fmt.Errorf("is ambiguous (--%s or --%s?)", found.long[0], options[i].long[0])
				}
				found = &options[i]
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("is not a modprobe option")
	}
	return found, nil
}

// Parse reads argv (without the program name). It returns the command
// and every word that cannot be run, in order.
func Parse(argv []string) (*Command, []*Error) {
	c := &Command{DirAt: -1, RemoveAt: -1}
	var errs []*Error
	var positional []Word
	// use applies one option found at word i, written as name; value is
	// its argument when it takes one.
	use := func(o *option, name, value string, i int) {
		switch o.kind {
		case optAll:
			c.All = true
		case optRemove:
			c.Remove, c.RemoveAt = true, i
		case optFirstTime:
			c.FirstTime = true
		case optVerbose:
			c.Verbose++
		case optQuiet:
			c.Quiet = true
		case optDir:
			c.Dir, c.DirAt = value, i
		case optNoEffect:
		default:
			errs = append(errs, &Error{At: i, Option: name, Reason: o.why})
		}
	}
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		switch {
		case w == "--":
			for j := i + 1; j < len(argv); j++ {
				positional = append(positional, Word{argv[j], j})
			}
			i = len(argv)
		case strings.HasPrefix(w, "--"):
			name, value, hasValue := strings.Cut(w[2:], "=")
			o, err := longOption(name)
			if err != nil {
				errs = append(errs, &Error{At: i, Option: "--" + name, Reason: err.Error()})
				continue
			}
			at := i
			switch {
			case o.arg && !hasValue:
				if i+1 >= len(argv) {
					errs = append(errs, &Error{At: i, Option: "--" + name, Reason: "needs a value"})
					continue
				}
				i++
				value, at = argv[i], i
			case !o.arg && hasValue:
				errs = append(errs, &Error{At: i, Option: "--" + name, Reason: "takes no value"})
				continue
			}
			use(o, "--"+name, value, at)
		case len(w) > 1 && w[0] == '-':
			for k := 1; k < len(w); k++ {
				o := shortOption(w[k])
				name := "-" + string(w[k])
				if o == nil {
					errs = append(errs, &Error{At: i, Option: name, Reason: "is not a modprobe option"})
					continue
				}
				if !o.arg {
					use(o, name, "", i)
					continue
				}
				value, at := w[k+1:], i
				if value == "" {
					if i+1 >= len(argv) {
						errs = append(errs, &Error{At: i, Option: name, Reason: "needs a value"})
						break
					}
					i++
					value, at = argv[i], i
				}
				use(o, name, value, at)
				break
			}
		default:
			positional = append(positional, Word{w, i})
		}
	}
	if c.Remove || c.All || len(positional) == 0 {
		c.Names = positional
	} else {
		c.Names, c.Params = positional[:1], positional[1:]
	}
	return c, errs
}

// Options joins module parameters into the option string the kernel
// reads, as modprobe does: a value holding a space is quoted unless it
// already starts with a quote.
func Options(params []string) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte(' ')
		}
		key, value, ok := strings.Cut(p, "=")
		if ok && value != "" && value[0] != '"' && value[0] != '\'' && strings.Contains(value, " ") {
			b.WriteString(key + `="` + value + `"`)
			continue
		}
		b.WriteString(p)
	}
	return b.String()
}
