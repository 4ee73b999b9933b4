// Package registry will answer whether a kernel-module image exists, with
// go-containerregistry, pull secrets, TLS options and caching; pull and
// extract kmod images; and push what the builders produce.
//
// It has no API yet: this package reserves its place in the layout.
package registry
