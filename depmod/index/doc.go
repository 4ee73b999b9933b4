// Package index reads and writes kmod's binary index files
// (modules.dep.bin, modules.alias.bin, modules.symbols.bin,
// modules.builtin.bin, modules.builtin.alias.bin): format 0xB007F457
// version 2.1, a trie with one character on each edge, big-endian and
// unpadded.
//
// [Builder] writes exactly the bytes kmod 30's depmod writes for the same
// keys and values: nodes in post-order, the root last. [Reader] answers the
// lookups libkmod and modprobe make: an exact key ([Reader.Lookup], for
// modules.dep.bin) and a query matched against stored fnmatch patterns
// ([Reader.Match], for aliases and symbols). It reads the post-order files
// of kmod 30 to 33 and the pre-order files of kmod 34 and later.
package index

const (
	magic        = 0xB007F457
	version      = 0x00020001
	flagPrefix   = 0x80000000
	flagValues   = 0x40000000
	flagChildren = 0x20000000
	offsetMask   = 0x0FFFFFFF
	headerSize   = 12
)
