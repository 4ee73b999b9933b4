#!/usr/bin/env bash
# Downloads the newest linux-image-*-amd64 package of Debian 12's
# bookworm-backports (Linux 6.12, whose modules ship as .ko.xz), never
# installing it, and unpacks it under $KMMKIT_CACHE/kernel/<version>/root,
# once. Prints that root, for `make bench-depmod TREE=... COMPRESS=none`.
# It uses apt with its own source list and state in the cache, so the
# machine's apt sources are left as they are.
set -euo pipefail
cache=${KMMKIT_CACHE:-$HOME/.cache/kmmkit}
apt_dir=$cache/apt-backports
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/dl"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" >"$apt_dir/sources.list"
apt_opts=(-o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
	-o Dir::State::Lists="$apt_dir/lists" -o Dir::Cache="$apt_dir/cache")
pkg_of() { apt-cache "${apt_opts[@]}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'; }
pkg=$(pkg_of || true)
if [[ -z $pkg ]]; then
	apt-get "${apt_opts[@]}" update -qq >&2
	pkg=$(pkg_of || true)
fi
if [[ -z $pkg ]]; then
	echo "backports-tree: no linux-image package in bookworm-backports (not reachable?)" >&2
	exit 1
fi
version=${pkg#linux-image-}
dir=$cache/kernel/$version
if [[ ! -d $dir/root/lib/modules/$version ]]; then
	echo "backports-tree: downloading and unpacking $pkg (about 110 MB)" >&2
	rm -rf "$dir" "$apt_dir/dl"/*.deb
	mkdir -p "$dir"
	(cd "$apt_dir/dl" && apt-get "${apt_opts[@]}" download "$pkg" >&2)
	dpkg-deb -x "$apt_dir"/dl/*.deb "$dir/root.tmp"
	mv "$dir/root.tmp" "$dir/root"
	rm -f "$apt_dir"/dl/*.deb
fi
echo "$dir/root"
