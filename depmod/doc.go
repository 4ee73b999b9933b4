// Package depmod is a native depmod: it indexes a kernel module tree and
// writes the ten files kmod 30's depmod writes (modules.dep,
// modules.dep.bin, modules.alias, modules.alias.bin, modules.softdep,
// modules.symbols, modules.symbols.bin, modules.builtin.bin,
// modules.builtin.alias.bin, modules.devname), byte for byte identical to
// Debian 12's kmod for the same tree, in about half its time on two cores
// for .ko and .ko.zst trees (pure Go xz decoding costs about 1.35× the CPU
// of liblzma, so .ko.xz trees are faster than kmod only with a second core
// free).
//
// [Run] takes kmod's options: a base directory (-b), an output directory
// (-o), depmod.d configuration (-C; search, override, external and
// exclude, with kmod's priority rules for modules found twice),
// Module.symvers or System.map with -e checks, a symbol prefix (-P), quick
// mode (-A), dry runs (-n) and file mode. Modules may be .ko, .ko.xz,
// .ko.zst or .ko.gz, ELF32 or ELF64 of either byte order; they are read in
// parallel (Workers) with pure Go decompressors, one pooled decoder per
// worker, so nothing needs cgo or kmod.
//
// Like kmod, a module that cannot be read keeps its modules.dep line with
// no dependencies and the run goes on, and a dependency cycle fails the
// run with kmod's messages (without kmod 30's hang on some cycles). Unlike
// kmod, every output is computed before any file is written, and the ten
// are replaced as a set: all are written to temporary files first, so a
// full disk or a blocked path replaces none, and if one of the ten renames
// fails, the files already renamed are put back from copies kept until
// the end; if putting one back fails too, the error names each file that
// is new and where its previous content is kept.
//
// Memory is bounded whatever the modules hold: a module file over
// [github.com/kmmkit/kmmkit/depmod/modfile.DefaultMaxSize] (512 MiB), on disk or decompressed, is refused,
// and so is a zstd window or xz dictionary over [github.com/kmmkit/kmmkit/depmod/modfile.DefaultMaxWindow]
// (128 MiB), before anything it declares is allocated; a refused module is
// reported like any unreadable one. Each of the Workers goroutines holds at
// most one module's output at a time.
//
// Subpackages: [github.com/kmmkit/kmmkit/depmod/index] reads and writes the
// binary indexes (and answers modprobe's lookups);
// [github.com/kmmkit/kmmkit/depmod/modfile] reads module files.
package depmod
