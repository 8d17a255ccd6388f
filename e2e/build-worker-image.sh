#!/usr/bin/env bash
# Builds the worker image on this machine, pulled from nowhere (work in
# progress: Dockerfile.worker comes with the shipping issue). It lays out what
# that Dockerfile's runtime stage will hold: the q8s binary (stripped) at
# /usr/local/bin/q8s, the shared libraries it links, CA certificates, and a
# user q8s (65532) to run as; entrypoint q8s. umoci makes the OCI layout; the
# archive is cached outside the clone by the content hash of what goes in.
# Prints the archive's path on stdout.
#
#   e2e/build-worker-image.sh [PATH-TO-q8s]    (default: the debug build cargo test made)
#   Q8S_IMAGE_CACHE   where archives live (default: $XDG_CACHE_HOME/q8s/images)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary=${1:-${CARGO_TARGET_DIR:-$repo/target}/debug/q8s}
[ -x "$binary" ] || { echo "build-worker-image: $binary is not built (cargo build -p q8s)" >&2; exit 1; }
cache="${Q8S_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/q8s/images}"
tag=0.1.0

libraries=$(ldd "$binary" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u)
certificates=/etc/ssl/certs/ca-certificates.crt
hash=$(
  {
    sha256sum "$binary" "$0"
    # shellcheck disable=SC2086
    sha256sum $libraries
    [ -f "$certificates" ] && sha256sum "$certificates"
  } | sha256sum | cut -c1-16
)
out="$cache/q8s-worker-$tag-$hash.tar"
if [ -f "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-worker.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp" "$root/var/lib/q8s"
chmod 1777 "$root/tmp"
objcopy --strip-debug "$binary" "$root/usr/local/bin/q8s"
for library in $libraries; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
[ -f "$certificates" ] && cp -L "$certificates" "$root$certificates"
printf 'root:x:0:0:root:/root:/sbin/nologin\nq8s:x:65532:65532:q8s:/var/lib/q8s:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nq8s:x:65532:\n' >"$root/etc/group"
chown 65532:65532 "$root/var/lib/q8s"

umoci init --layout "$work/oci"
umoci new --image "$work/oci:$tag"
umoci insert --image "$work/oci:$tag" "$root" /
umoci config --image "$work/oci:$tag" --config.entrypoint /usr/local/bin/q8s \
  --config.user 65532:65532 --config.workingdir /var/lib/q8s \
  --config.label org.opencontainers.image.title=q8s-worker \
  --config.label "org.opencontainers.image.version=$tag" \
  --architecture amd64 --os linux
(cd "$work/oci" && tar -cf "$work/image.tar" .)
mv "$work/image.tar" "$out"
# Each q8s build makes a new one: the older archives are of no more use.
find "$cache" -maxdepth 1 -name "q8s-worker-$tag-*.tar" ! -path "$out" -delete
echo "worker image built: $out" >&2
echo "$out"
