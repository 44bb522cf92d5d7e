# Resolves llama.cpp into two targets the rest of the build links:
#   inferbox::llama         libllama + ggml (the engine)
#   inferbox::llama_common  llama.cpp's `common` (chat templates, sampling, grammars)
#
# Three ways in, first match wins:
#   -DINFERBOX_LLAMA_DIR=<source>    build llama.cpp from that source tree inside this build
#                                    (pass -DGGML_CUDA=ON and friends for GPU builds)
#   -DINFERBOX_LLAMA_BUILD=<build>   link the static libraries of a llama.cpp build tree made
#                                    by scripts/setup.sh (the default path: built once, reused)
#   find_package(llama)              an installed llama.cpp; `common` is not installed by
#                                    llama.cpp, so its source must also be given with
#                                    -DINFERBOX_LLAMA_DIR (which then wins) — see README.
set(INFERBOX_LLAMA_DIR "" CACHE PATH "llama.cpp source tree to build together with inferbox")
set(INFERBOX_LLAMA_BUILD "" CACHE PATH "llama.cpp build tree (static libraries) made by scripts/setup.sh")

find_package(Threads REQUIRED)
find_package(OpenMP)

if(INFERBOX_LLAMA_DIR)
  set(LLAMA_BUILD_COMMON ON CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TESTS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_TOOLS OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_SERVER OFF CACHE BOOL "" FORCE)
  set(LLAMA_BUILD_APP OFF CACHE BOOL "" FORCE)
  set(LLAMA_OPENSSL OFF CACHE BOOL "" FORCE)
  add_subdirectory(${INFERBOX_LLAMA_DIR} ${CMAKE_BINARY_DIR}/llama.cpp EXCLUDE_FROM_ALL SYSTEM)
  add_library(inferbox_llama INTERFACE)
  target_link_libraries(inferbox_llama INTERFACE llama ggml)
  if(GGML_RPC)
    set(INFERBOX_HAVE_RPC ON)
  endif()
  add_library(inferbox_llama_common INTERFACE)
  target_link_libraries(inferbox_llama_common INTERFACE llama-common inferbox_llama)
  set(INFERBOX_LLAMA_SOURCE ${INFERBOX_LLAMA_DIR})
elseif(INFERBOX_LLAMA_BUILD)
  if(NOT EXISTS ${INFERBOX_LLAMA_BUILD}/CMakeCache.txt)
    message(FATAL_ERROR "INFERBOX_LLAMA_BUILD=${INFERBOX_LLAMA_BUILD} is not a llama.cpp build tree; run scripts/setup.sh")
  endif()
  load_cache(${INFERBOX_LLAMA_BUILD} READ_WITH_PREFIX llama_ CMAKE_HOME_DIRECTORY GGML_RPC)
  set(INFERBOX_LLAMA_SOURCE ${llama_CMAKE_HOME_DIRECTORY})
  set(b ${INFERBOX_LLAMA_BUILD})
  set(s ${INFERBOX_LLAMA_SOURCE})
  function(inferbox_import name path)
    if(NOT EXISTS ${path})
      message(FATAL_ERROR "${path} is missing: run scripts/setup.sh to build llama.cpp")
    endif()
    add_library(${name} STATIC IMPORTED GLOBAL)
    set_target_properties(${name} PROPERTIES IMPORTED_LOCATION ${path})
  endfunction()
  inferbox_import(ib_ggml_base ${b}/ggml/src/libggml-base.a)
  inferbox_import(ib_ggml_cpu ${b}/ggml/src/libggml-cpu.a)
  inferbox_import(ib_ggml ${b}/ggml/src/libggml.a)
  inferbox_import(ib_llama ${b}/src/libllama.a)
  inferbox_import(ib_common ${b}/common/libllama-common.a)
  inferbox_import(ib_common_base ${b}/common/libllama-common-base.a)
  inferbox_import(ib_httplib ${b}/vendor/cpp-httplib/libcpp-httplib.a)
  # The RPC backend (serve --rpc): libggml's registry refers to it when llama.cpp was built with
  # GGML_RPC, so it must be linked then, and after libggml.
  set(rpc "")
  if(llama_GGML_RPC)
    inferbox_import(ib_ggml_rpc ${b}/ggml/src/ggml-rpc/libggml-rpc.a)
    set(rpc ib_ggml_rpc)
    set(INFERBOX_HAVE_RPC ON)
  endif()
  set(omp "")
  if(OpenMP_CXX_FOUND)
    set(omp OpenMP::OpenMP_CXX)
  endif()
  add_library(inferbox_llama INTERFACE)
  target_include_directories(inferbox_llama SYSTEM INTERFACE ${s}/include ${s}/ggml/include)
  target_link_libraries(inferbox_llama INTERFACE ib_llama ib_ggml ${rpc} ib_ggml_cpu ib_ggml_base ${omp}
                                                 Threads::Threads ${CMAKE_DL_LIBS} m)
  add_library(inferbox_llama_common INTERFACE)
  # common's headers include llama.cpp's vendored nlohmann/json (a newer version than Debian's):
  # only translation units that use `common` see it, and they never include our JSON layer.
  target_include_directories(inferbox_llama_common SYSTEM INTERFACE ${s}/common ${s}/vendor)
  target_link_libraries(inferbox_llama_common INTERFACE ib_common ib_common_base ib_httplib inferbox_llama)
else()
  find_package(llama CONFIG)
  if(llama_FOUND)
    message(FATAL_ERROR "an installed llama.cpp was found, but llama.cpp does not install its `common` library: "
                        "also pass -DINFERBOX_LLAMA_DIR=<the same llama.cpp source>")
  endif()
  message(FATAL_ERROR "no llama.cpp: run scripts/setup.sh, or pass -DINFERBOX_LLAMA_DIR=<source> or -DINFERBOX_LLAMA_BUILD=<build>")
endif()
# inferbox needs its fixes to llama.cpp (patches/llama.cpp, applied by scripts/setup.sh): a source
# tree without them builds an inferbox that cannot bound template rendering, so refuse it here with
# the command that applies them rather than fail at link time.
if(INFERBOX_LLAMA_SOURCE AND EXISTS ${INFERBOX_LLAMA_SOURCE}/common/jinja/runtime.h)
  file(STRINGS ${INFERBOX_LLAMA_SOURCE}/common/jinja/runtime.h llama_render_limits REGEX "set_render_limits")
  if(NOT llama_render_limits)
    message(FATAL_ERROR "${INFERBOX_LLAMA_SOURCE} lacks inferbox's llama.cpp patches; apply them with\n"
                        "  for p in ${CMAKE_SOURCE_DIR}/patches/llama.cpp/*.patch; do git -C ${INFERBOX_LLAMA_SOURCE} apply $p; done")
  endif()
endif()
# The decode prefetch (patches/llama.cpp/0003) changes no result, only speed: a tree without it is
# accepted with a warning, since CPU decode is then 20-45 % slower on some machines.
if(INFERBOX_LLAMA_SOURCE AND EXISTS ${INFERBOX_LLAMA_SOURCE}/ggml/src/ggml-cpu/ggml-cpu.c)
  file(STRINGS ${INFERBOX_LLAMA_SOURCE}/ggml/src/ggml-cpu/ggml-cpu.c llama_prefetch_rows REGEX "prefetch_rows")
  if(NOT llama_prefetch_rows)
    message(WARNING "${INFERBOX_LLAMA_SOURCE} lacks patches/llama.cpp/0003-cpu-mul-mat-prefetch-rows.patch: "
                    "CPU decode will be slower (apply it as the other patches)")
  endif()
endif()
# Likewise the grouped flash-attention kernel (0005): `auto` attention on the CPU is f16 with flash
# attention because of it; without it, decode at long contexts is up to 10x slower.
if(INFERBOX_LLAMA_SOURCE AND EXISTS ${INFERBOX_LLAMA_SOURCE}/ggml/src/ggml-cpu/ops.cpp)
  file(STRINGS ${INFERBOX_LLAMA_SOURCE}/ggml/src/ggml-cpu/ops.cpp llama_fa_gqa_tile REGEX "flash_attn_ext_gqa_tile")
  if(NOT llama_fa_gqa_tile)
    message(WARNING "${INFERBOX_LLAMA_SOURCE} lacks patches/llama.cpp/0005-cpu-flash-attn-gqa-tiles.patch: "
                    "CPU decode with flash attention (serve's default) will be slower (apply it as the other patches)")
  endif()
endif()
# INFERBOX_HAVE_RPC: ggml's RPC backend is linked, so `serve --rpc` works (ggml-rpc.h's API).
if(INFERBOX_HAVE_RPC)
  target_compile_definitions(inferbox_llama INTERFACE INFERBOX_HAVE_RPC=1)
endif()
add_library(inferbox::llama ALIAS inferbox_llama)
add_library(inferbox::llama_common ALIAS inferbox_llama_common)
