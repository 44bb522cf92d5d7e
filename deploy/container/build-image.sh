#!/usr/bin/env bash
# Builds the inferbox OCI image offline and reproducibly with buildah: a distroless-style root
# filesystem holding the inferbox binary, exactly the shared libraries `ldd` says it needs (with
# the dynamic loader), the CA bundle, a passwd/group with the non-root user `inferbox` (uid 1000),
# /tmp, and the model cache as a volume. No package manager, no shell.
#
#   deploy/container/build-image.sh [--binary PATH] [--tag NAME] [--oci-archive FILE] [--no-strip]
#                                   [--root DIR --runroot DIR --storage-driver DRIVER]
#   deploy/container/build-image.sh --rootfs DIR [--binary PATH] [--no-strip] [--allow-missing LIB]
#
#   --binary PATH       the built inferbox (default: $INFERBOX_BIN or build/inferbox)
#   --tag NAME          image name (default: localhost/inferbox:<version>)
#   --oci-archive FILE  also write the image as an OCI archive (for `podman load`, registries, k8s)
#   --no-strip          keep the binary's debug information (default: strip it into the image;
#                       the build tree's binary is never touched)
#   --root/--runroot/--storage-driver
#                       buildah's storage options (default: buildah's own configuration; the
#                       integration test points them at a temporary folder)
#   --rootfs DIR        only write the root-owned part of the root filesystem into DIR (a new or
#                       empty folder) and stop; needs no buildah. Containerfile's build stage uses
#                       this, so both images have one layout. The folders owned by uid 1000
#                       (/home/inferbox, /var/cache/inferbox) are left to the caller.
#   --allow-missing LIB a library ldd cannot find that the runtime supplies (repeatable; the CUDA
#                       image passes libcuda.so.1, which the NVIDIA container toolkit mounts in)
#
# The image runs on CPUs with the instruction set the binary was built for: scripts/setup.sh
# builds llama.cpp with GGML_NATIVE=ON (this machine's ISA); Containerfile builds a portable one.
#
# Reproducible: every timestamp (image config, history, file times in the layer) is
# SOURCE_DATE_EPOCH, by default the time of the last git commit, and file modes and owners are
# set explicitly, so the same binary on the same Debian libraries gives the same image id.
# Keep the layout, user, volume and entrypoint in step with Containerfile and Containerfile.cuda.
set -euo pipefail
trap 'printf "[build-image] error: line %s failed: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR
root=$(cd "$(dirname "$0")/../.." && pwd)
log() { printf '[build-image] %s\n' "$*" >&2; }
die() { printf '[build-image] error: %s\n' "$*" >&2; exit 1; }

binary=${INFERBOX_BIN:-$root/build/inferbox}
tag=
archive=
strip_binary=1
buildah_opts=()
rootfs_only=
allow_missing=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --rootfs) rootfs_only=${2:?--rootfs needs a folder}; shift 2 ;;
    --allow-missing) allow_missing+=("${2:?--allow-missing needs a library name}"); shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --oci-archive) archive=${2:?--oci-archive needs a file}; shift 2 ;;
    --no-strip) strip_binary=0; shift ;;
    --root|--runroot|--storage-driver) buildah_opts+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

[ -f "$binary" ] || die "inferbox binary not found at $binary: build it first (scripts/setup.sh) or pass --binary PATH / set INFERBOX_BIN"
[ -x "$binary" ] || die "$binary is not executable"
command -v ldd >/dev/null 2>&1 || die "ldd is not installed (Debian package libc-bin)"
if [ -z "$rootfs_only" ]; then
  command -v buildah >/dev/null 2>&1 || die "buildah is not installed (scripts/setup.sh installs it: apt-get install buildah podman runc)"
fi

# --- metadata -------------------------------------------------------------------------------------
version=$(sed -n 's/^project(inferbox VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || die "could not read the project VERSION from $root/CMakeLists.txt"
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
llama_source="node-llama-cpp@$NODE_LLAMA_CPP_VERSION"
# The llama.cpp commit inside that package's git bundle, when scripts/setup.sh has unpacked it.
deps_src=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}/node-llama-cpp-$NODE_LLAMA_CPP_VERSION/src
llama_commit=$(git -C "$deps_src" rev-parse HEAD 2>/dev/null || echo unknown)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null) || SOURCE_DATE_EPOCH=
  [ -n "$SOURCE_DATE_EPOCH" ] || [ -n "$rootfs_only" ] || die "not a git checkout: set SOURCE_DATE_EPOCH"
  SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
fi
case "$SOURCE_DATE_EPOCH" in ''|*[!0-9]*) die "SOURCE_DATE_EPOCH must be seconds since the epoch, got '$SOURCE_DATE_EPOCH'" ;; esac
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
tag=${tag:-localhost/inferbox:$version}

# --- the root filesystem --------------------------------------------------------------------------
stage=$(mktemp -d "${TMPDIR:-/tmp}/inferbox-image.XXXXXX")
ctr=
cleanup() {
  [ -z "$ctr" ] || buildah "${buildah_opts[@]}" rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$stage"
}
trap cleanup EXIT
rootfs=$stage/rootfs
if [ -n "$rootfs_only" ]; then
  mkdir -p "$rootfs_only"
  [ -z "$(ls -A "$rootfs_only")" ] || die "--rootfs $rootfs_only is not empty"
  rootfs=$(cd "$rootfs_only" && pwd)
fi
mkdir -p "$rootfs"

install -d -m 0755 "$rootfs/usr/local/bin"
if [ "$strip_binary" = 1 ]; then
  command -v strip >/dev/null 2>&1 || die "strip is not installed (Debian package binutils); or pass --no-strip"
  strip --strip-unneeded -o "$rootfs/usr/local/bin/inferbox" "$binary"
else
  cp "$binary" "$rootfs/usr/local/bin/inferbox"
fi
chmod 0755 "$rootfs/usr/local/bin/inferbox"

# Shared libraries at the paths the loader resolves them to here (ldd), the loader itself at the
# binary's PT_INTERP path, and each library's Debian copyright file (the licences that travel with
# the binaries).
ldd_out=$(ldd "$binary") || die "ldd $binary failed"
missing=$(awk '$3 == "not" && $4 == "found" { print $1 }' <<<"$ldd_out")
for lib in $missing; do
  case " ${allow_missing[*]} " in
    *" $lib "*) log "leaving out $lib (--allow-missing: the runtime supplies it)" ;;
    *) die "$binary needs $lib, which ldd cannot find here (install it, or pass --allow-missing $lib if the runtime supplies it)" ;;
  esac
done
libs=()
while read -r lib; do
  [ -n "$lib" ] && libs+=("$lib")
done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
[ ${#libs[@]} -gt 0 ] || die "ldd found no shared libraries in $binary (a static binary needs no libraries; this script expects a dynamic one)"
pkgs=()
for lib in "${libs[@]}"; do
  install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  # dpkg knows each file under one spelling; with merged /usr it may be either.
  real=$(readlink -f "$lib")
  for p in "$lib" "$real" "${real#/usr}" "/usr$real" "$(dirname "$lib")/$(basename "$real")"; do
    pkg=$(dpkg -S "$p" 2>/dev/null | head -1 | cut -d: -f1) || true
    if [ -n "$pkg" ]; then pkgs+=("$pkg"); break; fi
  done
done
# Libraries outside the loader's default folders (CUDA's, under /usr/local) need an ld.so.cache.
triplet=$(uname -m)-linux-gnu
extra_dirs=()
for lib in "${libs[@]}"; do
  d=$(dirname "$lib")
  case "$d" in
    /lib|/usr/lib|/lib64|/usr/lib64|/lib/"$triplet"|/usr/lib/"$triplet") ;;
    *) case " ${extra_dirs[*]} " in *" $d "*) ;; *) extra_dirs+=("$d") ;; esac ;;
  esac
done
if [ ${#extra_dirs[@]} -gt 0 ]; then
  install -d -m 0755 "$rootfs/etc"
  printf '%s\n' "${extra_dirs[@]}" >"$rootfs/etc/ld.so.conf"
  ldconfig -r "$rootfs" || die "ldconfig -r $rootfs failed (it needs root) for the libraries in ${extra_dirs[*]}"
fi
for pkg in $(printf '%s\n' "${pkgs[@]}" | sort -u); do
  if [ -f "/usr/share/doc/$pkg/copyright" ]; then
    install -D -m 0644 "/usr/share/doc/$pkg/copyright" "$rootfs/usr/share/doc/$pkg/copyright"
  fi
done

ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || die "$ca is missing (Debian package ca-certificates)"
install -D -m 0644 "$ca" "$rootfs$ca"

install -d -m 0755 "$rootfs/etc"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'inferbox:x:1000:1000:inferbox:/home/inferbox:/sbin/nologin' \
  'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' >"$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'inferbox:x:1000:' 'nogroup:x:65534:' >"$rootfs/etc/group"
printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0700 "$rootfs/root"
install -d -m 0755 "$rootfs/models"   # mount point for model files (read-only is enough)
chmod 0755 "$rootfs" "$rootfs/usr" "$rootfs/usr/local" "$rootfs/etc"
find "$rootfs" -type d -exec chmod go-w,a+rx {} + -o -type f ! -perm -u=x -exec chmod 0644 {} +
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
install -d -m 0755 "$rootfs/home" "$rootfs/var" "$rootfs/var/cache"
# Owned by the inferbox user (added below): its home and the model cache (a volume, so a fresh
# named volume starts out writable by uid 1000).
owned_dirs=(/home/inferbox /var/cache/inferbox)
install -d -m 0755 "$stage/empty"

if [ -n "$rootfs_only" ]; then
  rm -rf "$stage"
  log "wrote the root filesystem to $rootfs (without ${owned_dirs[*]}, owned by uid 1000)"
  exit 0
fi

# --- the image ------------------------------------------------------------------------------------
log "building $tag from $binary (inferbox $version, llama.cpp from $llama_source, commit $llama_commit)"
ctr=$(buildah "${buildah_opts[@]}" from --quiet scratch)
buildah "${buildah_opts[@]}" add --quiet --chown 0:0 "$ctr" "$rootfs/" / >/dev/null
for d in "${owned_dirs[@]}"; do
  buildah "${buildah_opts[@]}" add --quiet --chown 1000:1000 "$ctr" "$stage/empty/" "$d" >/dev/null
done

labels=(
  "org.opencontainers.image.title=inferbox"
  "org.opencontainers.image.description=OpenAI-compatible LLM inference server on llama.cpp (CPU build)"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.base.name=scratch"
  "io.inferbox.version=$version"
  "io.inferbox.llama-cpp.source=$llama_source"
  "io.inferbox.llama-cpp.commit=$llama_commit"
  "io.inferbox.backend=cpu"
)
config=(--created-by "deploy/container/build-image.sh"
  --os linux --arch "$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
  --user 1000:1000 --workingdir /home/inferbox
  --env PATH=/usr/local/bin:/usr/bin:/bin --env HOME=/home/inferbox
  --env INFERBOX_CACHE=/var/cache/inferbox --env INFERBOX_LOG_FORMAT=json
  --volume /var/cache/inferbox --port 8000/tcp --stop-signal SIGTERM
  --entrypoint '["/usr/local/bin/inferbox","serve","--host","0.0.0.0","--port","8000"]')
for l in "${labels[@]}"; do config+=(--label "$l" --annotation "$l"); done
buildah "${buildah_opts[@]}" config "${config[@]}" "$ctr"

image_id=$(buildah "${buildah_opts[@]}" commit --quiet --rm --identity-label=false --format oci \
  --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$tag")
ctr=
if [ -n "$archive" ]; then
  rm -f "$archive"
  buildah "${buildah_opts[@]}" push --quiet "$tag" "oci-archive:$archive:$tag"
  log "wrote $archive"
fi

# (No `| head`: with pipefail, buildah killed by SIGPIPE would fail the build.)
size=$(buildah "${buildah_opts[@]}" images --noheading --format '{{.Size}}' "$tag") || size=unknown
size=${size%%$'\n'*}
log "built $tag: image id $image_id, size $size"
echo "$image_id"
