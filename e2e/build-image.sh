#!/usr/bin/env bash
# Builds the worker or operator image on this machine, pulled from nowhere.
# Its layout is read from the last stage of Dockerfile.worker or
# Dockerfile.operator: each `COPY --from=build /out/...` (the binary given
# here, to the entrypoint's path; else an empty folder with the owner
# --chown names), USER, WORKDIR,
# ENTRYPOINT, CMD and the version label. What that stage's distroless base
# holds comes from this machine (Debian 12, as the base is): the shared
# libraries the binary links, CA certificates, and the nonroot user 65532.
# The Rust builder stages do not run: the binary is the one cargo built here.
# umoci makes the OCI layout; the archive is cached outside the clone by the
# content hash of what goes in. Prints the archive's path on stdout.
#
#   e2e/build-image.sh worker|operator [BINARY]   (default: the debug build in the cargo target)
#   Q8S_IMAGE_CACHE   where archives live (default: $XDG_CACHE_HOME/q8s/images)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
which=${1:?usage: e2e/build-image.sh worker|operator [BINARY]}
case "$which" in
  worker) program=q8s ;;
  operator) program=q8s-operator ;;
  *) echo "build-image: $which: not an image; use worker or operator" >&2; exit 2 ;;
esac
dockerfile="$repo/Dockerfile.$which"
binary=${2:-${CARGO_TARGET_DIR:-$repo/target}/debug/$program}
[ -x "$binary" ] || { echo "build-image: $binary is not built (cargo build -p $program)" >&2; exit 1; }
cache="${Q8S_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/q8s/images}"

# The last stage, one instruction per line: KIND<TAB>value (JSON for the
# exec forms, as the Dockerfile writes them).
stage=$(python3 - "$dockerfile" <<'PY'
import json, re, shlex, sys
text = open(sys.argv[1]).read()
lines, current = [], ""
for raw in text.splitlines():
    line = raw.strip()
    if not current and (not line or line.startswith("#")):
        continue
    current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
    if not line.endswith("\\"):
        lines.append(current)
        current = ""
args = {}
last = []
for line in lines:
    word, _, rest = line.partition(" ")
    word = word.upper()
    if word == "FROM":
        last = []
    elif word == "ARG":
        name, _, default = rest.partition("=")
        args.setdefault(name, default)
    else:
        last.append((word, rest))
def expand(value):
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), value)
for word, rest in last:
    if word == "COPY":
        parts = shlex.split(rest)
        flags = [p for p in parts if p.startswith("--")]
        paths = [p for p in parts if not p.startswith("--")]
        chown = next((f.split("=", 1)[1] for f in flags if f.startswith("--chown=")), "0:0")
        print(f"COPY\t{paths[0]}\t{paths[1]}\t{chown}")
    elif word == "LABEL":
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            print(f"LABEL\t{key}\t{expand(value)}")
    elif word in ("USER", "WORKDIR"):
        print(f"{word}\t{rest}")
    elif word in ("ENTRYPOINT", "CMD"):
        print(f"{word}\t{' '.join(json.loads(rest))}")
PY
)
field() { awk -F'\t' -v k="$1" '$1 == k { print $2; exit }' <<<"$stage"; }
label() { awk -F'\t' -v k="$1" '$1 == "LABEL" && $2 == k { print $3; exit }' <<<"$stage"; }
title=$(label org.opencontainers.image.title)
tag=$(label org.opencontainers.image.version)
[ -n "$title" ] && [ -n "$tag" ] || { echo "build-image: $dockerfile has no title or version label" >&2; exit 1; }

libraries=$(ldd "$binary" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u)
certificates=/etc/ssl/certs/ca-certificates.crt
hash=$(
  {
    sha256sum "$binary" "$0" "$dockerfile"
    git -C "$repo" rev-parse HEAD 2>/dev/null || true
    # shellcheck disable=SC2086
    sha256sum $libraries
    if [ -f "$certificates" ]; then sha256sum "$certificates"; fi
  } | sha256sum | cut -c1-16
)
out="$cache/$title-$tag-$hash.tar"
if [ -f "$out" ]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.build-$which.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
# What the distroless base holds.
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/home/nonroot"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
for library in $libraries; do
  mkdir -p "$root$(dirname "$library")"
  cp -L "$library" "$root$library"
done
[ -f "$certificates" ] && cp -L "$certificates" "$root$certificates"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
# What the Dockerfile's last stage copies in.
# The binary goes where the entrypoint runs it from; other copies are folders.
entrypoint=$(field ENTRYPOINT)
entrypoint=${entrypoint%% *}
placed=0
while IFS=$'\t' read -r kind _source destination owner; do
  [ "$kind" = COPY ] || continue
  mkdir -p "$root$(dirname "$destination")"
  if [ "$destination" = "$entrypoint" ]; then
    objcopy --strip-debug "$binary" "$root$destination"
    chmod 0755 "$root$destination"
    placed=1
  else
    mkdir -p "$root$destination"
    chmod 0750 "$root$destination"
  fi
  chown "$owner" "$root$destination"
done <<<"$stage"
[ "$placed" = 1 ] || { echo "build-image: $dockerfile copies nothing to its entrypoint $entrypoint" >&2; exit 1; }

config=(--config.user "$(field USER)" --architecture amd64 --os linux)
[ -n "$(field WORKDIR)" ] && config+=(--config.workingdir "$(field WORKDIR)")
for word in $(field ENTRYPOINT); do config+=(--config.entrypoint "$word"); done
for word in $(field CMD); do config+=(--config.cmd "$word"); done
while IFS=$'\t' read -r kind key value; do
  [ "$kind" = LABEL ] && config+=(--config.label "$key=$value")
done <<<"$stage"
config+=(--config.label "org.opencontainers.image.revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)")

umoci init --layout "$work/oci"
umoci new --image "$work/oci:$tag"
umoci insert --image "$work/oci:$tag" "$root" /
umoci config --image "$work/oci:$tag" "${config[@]}"
(cd "$work/oci" && tar -cf "$work/image.tar" .)
mv "$work/image.tar" "$out"
# Each build makes a new one: the older archives are of no more use.
find "$cache" -maxdepth 1 -name "$title-$tag-*.tar" ! -path "$out" -delete
echo "$which image built: $out ($title:$tag)" >&2
echo "$out"
