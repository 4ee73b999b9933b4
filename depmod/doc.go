// Package depmod will be a native depmod whose index files are
// byte-identical to kmod's, and a reader of those indexes.
//
// It has no API yet: this package reserves its place in the layout.
package depmod
