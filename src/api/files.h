#pragma once
// The Files API's JSON shapes (OpenAI's file object, list and deletion answers). The routes
// themselves are api_router's handle_file_* (api/files.cpp); the storage, the upload reader and
// text extraction live in src/files/.

#include "files/file_store.h"

#include <nlohmann/json.hpp>

#include <string>

namespace inferbox {

// {id, object: "file", bytes, created_at, filename, purpose, status: "processed", ...}
nlohmann::json file_object(const file_record &f);

// OpenAI's list shape: {object: "list", data, has_more, first_id, last_id}.
nlohmann::json file_list_json(const file_page &page);

} // namespace inferbox
