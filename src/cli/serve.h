#pragma once

#include "api/http_server.h"
#include "api/schema.h"
#include "engine/engine.h"

#include <string>

namespace inferbox {

struct serve_options {
    std::string   model_path;
    std::string   model_name; // default: the file name without .gguf
    std::string   chat_template;
    std::string   host             = "127.0.0.1";
    uint16_t      port             = 8000;
    int32_t       http_threads     = 2;
    int32_t       shutdown_timeout = 30; // seconds to let in-flight requests finish
    engine_config engine;
    http_limits   http;
    api_limits    api;
};

int run_serve(const serve_options &opts);

} // namespace inferbox
