#!/usr/bin/env bash
# Downloads Debian's current linux-image-*-amd64 package (never installing
# it) and unpacks it under $KMMKIT_CACHE/kernel/<version>/root, once.
# Prints that root, which holds lib/modules/<version> and boot/.
set -euo pipefail
cache=${KMMKIT_CACHE:-$HOME/.cache/kmmkit}/kernel

pkg_of() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
pkg=$(pkg_of)
if [[ -z $pkg ]]; then
	apt-get update -qq >&2 || true
	pkg=$(pkg_of)
fi
if [[ -z $pkg ]]; then
	# Offline: use a tree unpacked before, if any.
	for d in "$cache"/*/root; do
		[[ -d $d/lib/modules ]] && { echo "$d"; exit 0; }
	done
	echo "kernel-tree: cannot find the linux-image-*-amd64 package (apt-get update failed?)" >&2
	exit 1
fi
version=${pkg#linux-image-}
dir=$cache/$version
if [[ ! -d $dir/root/lib/modules/$version ]]; then
	echo "kernel-tree: downloading and unpacking $pkg (about 70 MB)" >&2
	rm -rf "$dir"
	mkdir -p "$dir/dl"
	(cd "$dir/dl" && apt-get download "$pkg" >&2)
	dpkg-deb -x "$dir"/dl/*.deb "$dir/root.tmp"
	mv "$dir/root.tmp" "$dir/root"
	rm -rf "$dir/dl"
fi
echo "$dir/root"
