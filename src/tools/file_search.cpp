#include "tools/file_search.h"

#include "common/utf8.h"

#include <nlohmann/json.hpp>

namespace inferbox {

using json = nlohmann::json;

std::string file_search_output(const std::vector<retrieval::store_hit> &hits, size_t max_bytes) {
    json   out  = json::array();
    size_t left = max_bytes;
    for (const auto &h : hits) {
        if (left == 0) {
            break;
        }
        std::string text = h.text.substr(0, left);
        if (text.size() < h.text.size()) {
            text.resize(text.size() - utf8_incomplete_tail(text)); // never half a character
        }
        if (text.empty()) {
            break;
        }
        left -= text.size();
        json attributes = json::parse(h.attributes_json, nullptr, false);
        out.push_back({{"file_id", h.file_id},
                       {"filename", h.filename},
                       {"score", h.score},
                       {"attributes", attributes.is_object() ? attributes : json::object()},
                       {"text", text}});
    }
    return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

class file_search_tool final : public builtin_tool {
  public:
    explicit file_search_tool(file_search_spec spec) : spec_(std::move(spec)) {}

    tool_function function() const override {
        const json params = {
            {"type", "object"},
            {"properties",
             {{"query",
               {{"type", "string"},
                {"description", "what to look for: keywords or a question"},
                {"minLength", 1},
                {"maxLength", 200}}}}},
            {"required", {"query"}},
            {"additionalProperties", false},
        };
        return {"file_search",
                "Searches the user's uploaded files (vector stores) by meaning and keywords and returns the most "
                "relevant passages as JSON: file_id, filename, score (0..1), attributes and text.",
                params.dump()};
    }
    std::string kind() const override { return "file_search"; }
    // Not the store ids: the metrics label their calls by server, and ids are unbounded in number.
    std::string server() const override { return "vector_stores"; }
    std::string item_type() const override { return "file_search_call"; }

    tool_outcome run(const std::string &arguments_json) const override {
        const json args = json::parse(arguments_json, nullptr, /*allow_exceptions=*/false);
        if (!args.is_object() || !args.contains("query") || !args["query"].is_string() ||
            args["query"].get_ref<const std::string &>().empty()) {
            return {"", "the arguments must be {\"query\": \"...\"}"};
        }
        const auto query = args["query"].get<std::string>();
        if (query.size() > spec_.catalog->limits().max_query_bytes) {
            return {"", "the query has " + std::to_string(query.size()) + " bytes; at most " +
                            std::to_string(spec_.catalog->limits().max_query_bytes) + " are allowed"};
        }
        std::vector<float> vector;
        if (spec_.embed) {
            auto v = spec_.embed(query);
            if (!v) {
                return {"", v.err().message};
            }
            vector = std::move(*v);
        }
        auto hits =
            spec_.catalog->search(spec_.owner, spec_.store_ids, query, vector, spec_.max_num_results, spec_.options);
        if (!hits) {
            return {"", hits.err().message};
        }
        return {file_search_output(*hits, spec_.max_output_bytes), ""};
    }

  private:
    file_search_spec spec_;
};

} // namespace

std::shared_ptr<builtin_tool> make_file_search_tool(file_search_spec spec) {
    return std::make_shared<file_search_tool>(std::move(spec));
}

} // namespace inferbox
