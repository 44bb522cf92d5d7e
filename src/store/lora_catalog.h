#pragma once
// The LoRA adapter folder (--lora-dir / INFERBOX_LORA_DIR; NIM's NIM_PEFT_SOURCE idea): every
// adapter is one GGUF file, named by it —
//
//   DIR/NAME.gguf            the adapter NAME
//   DIR/NAME/<one>.gguf      the adapter NAME (a folder holding exactly one .gguf file)
//
// An entry is listed only when its GGUF header reads cleanly (store/gguf.h), says
// general.type = adapter and adapter.type = lora, and names the base model's architecture.
// Names are [A-Za-z0-9._-] (at most 128 characters, not starting with '.'); a symlink that
// resolves outside DIR is skipped. Everything skipped is reported by rescan(), with the reason.
//
// Thread-safe: the API threads look adapters up while another rescans.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox {

struct lora_entry {
    std::string           name;
    std::filesystem::path path;
    uint64_t              file_size = 0;
    uint64_t              n_params  = 0;
};

class lora_catalog {
  public:
    // `base_architecture`: general.architecture of the served model (adapters for another are
    // skipped). Lists nothing until the first rescan().
    lora_catalog(std::filesystem::path dir, std::string base_architecture);

    // Re-reads the folder; returns one line per skipped entry ("NAME: why").
    std::vector<std::string> rescan();

    std::vector<lora_entry> list() const; // sorted by name

    // The adapter `name`. An unknown name rescans the folder first ("rescanned on demand"), at
    // most once per `min_rescan_interval`, so a stream of unknown names cannot keep the server
    // reading the disk.
    std::optional<lora_entry> find(std::string_view name);

    const std::filesystem::path &dir() const { return dir_; }

    static constexpr std::chrono::milliseconds min_rescan_interval{1000};

    // Whether `name` may name an adapter (see the file comment).
    static bool valid_name(std::string_view name);

  private:
    std::filesystem::path                 dir_;
    std::string                           arch_;
    mutable std::mutex                    mu_;
    std::vector<lora_entry>               entries_;
    std::chrono::steady_clock::time_point last_scan_{};
};

} // namespace inferbox
