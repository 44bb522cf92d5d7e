#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for inferbox: system packages, the pinned llama.cpp source
# (built once into a cache outside the repository), the JavaScript test client, and the
# project's own build. Safe to run again: every step reuses what is already there.
#
#   INFERBOX_DEPS_CACHE   where llama.cpp's source and build live (default ~/.cache/inferbox-deps)
#   INFERBOX_BUILD_DIR    the project's build folder (default build/)
#   INFERBOX_SKIP_APT=1   do not call apt-get (packages already installed)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/deps.env
. "$root/scripts/deps.env"
cache=${INFERBOX_DEPS_CACHE:-$HOME/.cache/inferbox-deps}
build=${INFERBOX_BUILD_DIR:-$root/build}
log() { printf '[setup] %s\n' "$*"; }

packages=(build-essential cmake ninja-build ccache git ca-certificates openssl
  libboost1.81-dev nlohmann-json3-dev libspdlog-dev libcli11-dev libgtest-dev libgmock-dev
  clang-format clang-tidy clang libclang-rt-14-dev libssl-dev libcurl4-openssl-dev libyaml-cpp-dev libsqlite3-dev prometheus
  libpq-dev pkg-config # the sql tool's PostgreSQL client
  libhnswlib-dev libpoppler-cpp-dev # file_search: the vector index, and PDF text
  sqlite3 postgresql # the sql tool's tests: databases built and rows checked with the real shells and server
  buildah podman runc # the container image: deploy/container/build-image.sh and its test
  chromium) # the web console's tests run it headless
# Node.js (for the OpenAI SDK tests) only when absent: a machine may carry its own Node.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ "${INFERBOX_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    sudo_cmd=(); [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

# llama.cpp: npm tarball -> integrity check -> git bundle -> source tree -> static libraries.
dir="$cache/node-llama-cpp-$NODE_LLAMA_CPP_VERSION"
src="$dir/src"
llama_build="$dir/build-cpu"
mkdir -p "$dir"
if [ ! -f "$src/CMakeLists.txt" ]; then
  tgz="$dir/node-llama-cpp-$NODE_LLAMA_CPP_VERSION.tgz"
  if [ ! -f "$tgz" ]; then
    log "fetching node-llama-cpp@$NODE_LLAMA_CPP_VERSION from the npm registry"
    (cd "$dir" && npm pack --silent "node-llama-cpp@$NODE_LLAMA_CPP_VERSION" >/dev/null)
  fi
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$NODE_LLAMA_CPP_INTEGRITY" ]; then
    rm -f "$tgz"
    echo "integrity mismatch for node-llama-cpp@$NODE_LLAMA_CPP_VERSION: got $got" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/llama/gitRelease.bundle
  rm -rf "$src.tmp"
  git clone -q "$tmp/package/llama/gitRelease.bundle" "$src.tmp"
  rm -rf "$tmp" "$src"
  mv "$src.tmp" "$src"
fi

# Our fixes to llama.cpp (patches/llama.cpp, each one explained in its header), applied once: a
# patch that already reverses cleanly is in place. A patch that neither applies nor reverses
# means the source tree was edited by hand: stop rather than build something unknown.
for patch in "$root"/patches/llama.cpp/*.patch; do
  [ -f "$patch" ] || continue
  if git -C "$src" apply --reverse --check "$patch" 2>/dev/null; then
    continue
  fi
  if ! git -C "$src" apply --check "$patch" 2>/dev/null; then
    echo "patch $(basename "$patch") neither applies to nor is applied in $src" >&2
    exit 1
  fi
  log "applying $(basename "$patch") to llama.cpp"
  git -C "$src" apply "$patch"
done

# AMX: GGML_NATIVE=ON compiles ggml's AMX kernels whenever the CPU advertises AMX, and ggml then
# uses them for quantized weights without checking that the tile registers work. Some virtual
# machines advertise AMX yet fault on the first tile instruction (seen here: a Firecracker guest
# whose `ldtilecfg` raises a general-protection fault, which kills llama-bench, llama-server and
# inferbox alike on any Q8_0/Q4_K model). So when the CPU claims AMX, a tiny program asks the
# kernel for the tile state and loads a tile configuration; if that does not exit cleanly, the
# AMX ISA is left out of the native build (explicit -mno-* flags win over -march=native).
amx_flags=""
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
  probe_dir=$(mktemp -d)
  cat >"$probe_dir/amx.c" <<'PROBE'
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
  /* ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA, as ggml does before using AMX. */
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 2;
  unsigned char cfg[64];
  memset(cfg, 0, sizeof cfg);
  cfg[0] = 1;   /* palette 1 */
  cfg[16] = 64; /* tile 0: 64 bytes per row */
  cfg[48] = 16; /* tile 0: 16 rows */
  _tile_loadconfig(cfg);
  _tile_zero(0);
  _tile_release();
  return 0;
}
PROBE
  if ! { cc -O1 -mamx-tile -o "$probe_dir/amx" "$probe_dir/amx.c" 2>/dev/null && "$probe_dir/amx" 2>/dev/null; }; then
    amx_flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    log "the CPU advertises AMX but its tile instructions fault here: building llama.cpp without AMX"
  fi
  rm -rf "$probe_dir"
fi

# The RPC backend (GGML_RPC) lets `serve --rpc` put layers on other machines running
# ggml-rpc-server; RDMA stays off so the build needs no libibverbs. A cache configured before
# the RPC backend was added, or with other AMX flags, is configured again (ninja then rebuilds
# only what changed).
if [ ! -f "$llama_build/CMakeCache.txt" ] || ! grep -q '^GGML_RPC:BOOL=ON' "$llama_build/CMakeCache.txt" ||
  ! grep -qx "CMAKE_CXX_FLAGS:STRING=$amx_flags" "$llama_build/CMakeCache.txt"; then
  log "configuring llama.cpp (CPU and RPC backends, native ISA${amx_flags:+ without AMX}) in $llama_build"
  cmake -S "$src" -B "$llama_build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$amx_flags" -DCMAKE_CXX_FLAGS="$amx_flags" \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_CCACHE=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_RPC=ON -DGGML_RPC_RDMA=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
fi
# Only what we link and the RPC worker (ggml-rpc-server, which `serve --rpc` talks to), plus
# the peer tools the benchmarks compare against (llama-server, llama-bench) and the quantizer
# the synthetic-model generator uses. Ninja makes reruns no-ops.
targets=(llama llama-common ggml ggml-rpc ggml-rpc-server)
[ "${INFERBOX_SKIP_PEER_TOOLS:-0}" = 1 ] || targets+=(llama-server llama-bench llama-quantize)
log "building llama.cpp targets: ${targets[*]} (first run takes several minutes)"
ninja -C "$llama_build" "${targets[@]}" >"$dir/build.log" 2>&1 || { tail -40 "$dir/build.log"; exit 1; }

# JavaScript test client (the official OpenAI SDK), pinned by the lockfile.
if [ -f "$root/tests/integration/js/package-lock.json" ]; then
  log "installing the JavaScript test client"
  (cd "$root/tests/integration/js" && npm ci --silent --no-audit --no-fund)
fi

# The web console's framework and bundler (console/), pinned by its lockfile: the build embeds
# the bundle it makes.
log "installing the web console's build tools"
(cd "$root/console" && npm ci --silent --no-audit --no-fund)

log "configuring and building inferbox in $build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE="${INFERBOX_BUILD_TYPE:-RelWithDebInfo}" \
  -DINFERBOX_LLAMA_BUILD="$llama_build" >/dev/null
ninja -C "$build"
log "done: run scripts/test.sh"
