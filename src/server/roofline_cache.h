#pragma once

// The measured roofline (store/roofline.h) cached per machine in $INFERBOX_CACHE/roofline.json:
// `inferbox hardware --measure` writes it; `inferbox hardware`, `inferbox profiles` and
// `inferbox serve` read it (serve hands it to its plan in hardware_info::roofline, so that
// server/serve_plan stays free of I/O). A file written for another CPU, ISA or thread count, or a
// damaged one, is never used.

#include "store/hardware.h"
#include "store/roofline.h"

#include <nlohmann/json_fwd.hpp>

#include <filesystem>
#include <optional>
#include <string>

namespace inferbox {

// What a measurement belongs to: the same CPU, ISA and thread count measure the same.
std::string roofline_machine_key(const hardware_info &hw);

// $INFERBOX_CACHE/roofline.json (the model store's root); nullopt without a cache folder.
std::optional<std::filesystem::path> default_roofline_file();

struct cached_roofline {
    machine_roofline roofline;
    std::string      measured_at; // ISO 8601, UTC; "" when the file's date is unreadable
};

// The measurement in `file` when it is this machine's (`hw`) and every field it needs reads as
// the right type; nullopt otherwise (missing, another machine's, damaged).
std::optional<cached_roofline> read_roofline_cache(const std::filesystem::path &file, const hardware_info &hw);

// The cached measurement of this machine in default_roofline_file(); nullopt when there is none.
std::optional<cached_roofline> read_roofline_cache(const hardware_info &hw);

// Writes `r` for machine `hw` into `file` whole (a temporary file beside it, renamed over it: a
// reader never sees half a file, and a failed write keeps the previous measurement). False when
// it could not be written.
bool write_roofline_cache(const std::filesystem::path &file, const hardware_info &hw, const machine_roofline &r,
                          const std::string &measured_at);

// {"threads", "read_bytes_per_s", "kernel_bytes_per_s": {type: bytes/s}}.
nlohmann::json roofline_json(const machine_roofline &r);

} // namespace inferbox
