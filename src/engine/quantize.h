#pragma once
// Writes a quantized copy of a GGUF model with llama.cpp's quantizer (llama_model_quantize), for
// `inferbox import --quantize`. The caller picks the output path (the model store's staging
// folder) and validates the input first; llama.cpp's quantizer reports its errors by exceptions
// it catches itself, and this returns them as an error with llama.cpp's last error line.
//
// Thread safety: one quantization at a time per process (llama.cpp's log callback is global and
// is replaced for the call, then restored).

#include "common/status.h"

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace inferbox {

struct quantize_request {
    std::filesystem::path input;
    std::filesystem::path output;               // must not exist; removed again when quantizing fails
    uint32_t              file_type        = 0; // llama_ftype (store/weight_types.h's weight_type::file_type)
    int32_t               threads          = 0; // 0: all hardware threads
    bool                  allow_requantize = false;
    // Importance per tensor (store/imatrix.h), or nullptr.
    const std::map<std::string, std::vector<float>> *importance = nullptr;
    // Called as tensors are written: (tensors done, tensors in all), from the calling thread.
    std::function<void(int, int)> progress;
};

// Blocks until the output is written (or quantizing failed: nothing is left at `output`).
std::optional<error> quantize_model(const quantize_request &r);

} // namespace inferbox
