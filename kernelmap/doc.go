// Package kernelmap turns a Module and a node's kernel version into one
// resolved per-kernel [Record]: the kernel-module image for that kernel, and
// how to build, sign and load it.
//
// It behaves as KMM's kernel mapper does. The node kernel loses one
// trailing "+"; mappings are tried in list order and the first match wins;
// a literal must equal the kernel; a regexp is Go syntax and is not
// anchored. The matched mapping is merged with the module-wide settings
// (the mapping's image, TLS and Dockerfile win, build args merge by name,
// secrets and files to sign are appended) and variables are substituted
// into the image, the unsigned image and the files to sign:
//
//	${KERNEL_FULL_VERSION}  6.1.0-56-amd64   (also $KERNEL_FULL_VERSION)
//	${KERNEL_VERSION}       6.1.0-56-amd64
//	${KERNEL_XYZ}           6.1.0
//	${KERNEL_X} ${KERNEL_Y} ${KERNEL_Z}
//	${MOD_NAME} ${MOD_NAMESPACE}
//
// Where KMM is lax, kernelmap is strict: an unknown variable or an
// unterminated "${" is a [*FieldError] naming the variable and the field,
// never an empty string, and a resolved image must carry a tag or a digest.
// Where KMM silently drops a mapping's build baseImageRegistryTLS,
// kanikoParams and selector, kernelmap applies them.
//
// No matching mapping is the sentinel [ErrNoMapping]: a node without a
// mapping is not targeted, which is not a failure.
package kernelmap
