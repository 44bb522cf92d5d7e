// The Files API's routes (api_router's handle_file_*): upload, list, retrieve, content, delete, as
// OpenAI shapes them. Each key sees only its own files (owner_of). Uploads and content reads touch
// up to --files-max-bytes of disk, so they run on the preparation pool and answer on the
// exchange's executor; listings, lookups and deletions are short SQLite calls made in place.

#include "api/files.h"

#include "api/errors.h"
#include "api/query_string.h"
#include "api/routes.h"

#include <boost/asio/post.hpp>

#include <charconv>

namespace inferbox {

using json = nlohmann::json;

json file_object(const file_record &f) {
    return json{{"id", f.id},
                {"object", "file"},
                {"bytes", f.bytes},
                {"created_at", f.created_at},
                {"expires_at", nullptr},
                {"filename", f.filename},
                {"purpose", f.purpose},
                {"status", "processed"},
                {"status_details", nullptr}};
}

json file_list_json(const file_page &page) {
    json data = json::array();
    for (const auto &f : page.data) {
        data.push_back(file_object(f));
    }
    return json{{"object", "list"},
                {"data", data},
                {"has_more", page.has_more},
                {"first_id", page.data.empty() ? json(nullptr) : json(page.data.front().id)},
                {"last_id", page.data.empty() ? json(nullptr) : json(page.data.back().id)}};
}

namespace {

void respond_file_json(http_exchange &ex, const json &j) {
    ex.respond(http::status::ok, j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

// GET /v1/files's query: purpose, limit (1..10000, default 10000 as OpenAI's), order (asc|desc,
// default desc), after (a file id).
struct list_query {
    std::string purpose;
    page_query  page{10000, false, {}};
};

result<list_query> read_list_query(std::string_view target) {
    auto params = query_params(target);
    if (!params) {
        return params.err();
    }
    list_query q;
    for (const auto &[name, value] : *params) {
        auto paging = read_page_param(name, value, 10000, q.page);
        if (!paging) {
            return paging.err();
        }
        if (*paging) {
            continue;
        }
        if (name == "purpose") {
            if (!valid_file_purpose(value)) {
                return error::invalid("purpose must be one of assistants, batch, fine-tune, vision, user_data, evals",
                                      "purpose");
            }
            q.purpose = value;
        } else {
            return error::invalid("unknown query parameter '" + name.substr(0, 100) +
                                      "' (GET /v1/files takes purpose, limit, order, after)",
                                  name.substr(0, 100));
        }
    }
    return q;
}

} // namespace

file_store *api_router::files_or_404(http_exchange &ex) const {
    if (!cfg_.files) {
        respond_error(ex, error{error_kind::not_found,
                                "the Files API is off on this server (--files-max-total-bytes off, or no data "
                                "directory)",
                                "", "files_off"});
    }
    return cfg_.files.get();
}

void api_router::handle_file_upload(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = files_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    const auto &req   = ex->request();
    const auto  ctype = req[http::field::content_type];
    auto        upload =
        parse_file_upload(std::string_view(ctype.data(), ctype.size()), req.body(), store->limits().max_file_bytes);
    if (!upload) {
        respond_error(*ex, upload.err());
        return;
    }
    ex->log_field("file_bytes", static_cast<int64_t>(upload->bytes.size()));
    // The bytes are copied off the request: the pool must not read the exchange's state.
    boost::asio::post(prep_pool_,
                      [ex, files = cfg_.files, owner = owner_of(call.key_index), filename = std::move(upload->filename),
                       purpose = std::move(upload->purpose), bytes = std::string(upload->bytes)] {
                          auto stored = files->put(owner, filename, purpose, bytes);
                          boost::asio::post(ex->executor(), [ex, stored = std::move(stored)] {
                              if (!stored) {
                                  respond_error(*ex, stored.err());
                                  return;
                              }
                              ex->log_field("file_id", stored->id);
                              respond_file_json(*ex, file_object(*stored));
                          });
                      });
}

void api_router::handle_file_list(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = files_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto q = read_list_query(ex->request().target());
    if (!q) {
        respond_error(*ex, q.err());
        return;
    }
    auto page = store->list(owner_of(call.key_index), q->purpose, q->page.limit, q->page.ascending, q->page.after);
    if (!page) {
        respond_error(*ex, page.err());
        return;
    }
    respond_file_json(*ex, file_list_json(*page));
}

void api_router::handle_file_get(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = files_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    auto found = store->get(owner_of(call.key_index), call.param);
    if (!found) {
        respond_error(*ex, file_not_found(call.param));
        return;
    }
    respond_file_json(*ex, file_object(*found));
}

void api_router::handle_file_content(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    if (files_or_404(*ex) == nullptr) {
        return;
    }
    boost::asio::post(prep_pool_, [ex, files = cfg_.files, owner = owner_of(call.key_index), id = call.param] {
        auto bytes = files->content(owner, id);
        boost::asio::post(ex->executor(), [ex, bytes = std::move(bytes)]() mutable {
            if (!bytes) {
                respond_error(*ex, bytes.err());
                return;
            }
            ex->respond(http::status::ok, std::move(*bytes), "application/octet-stream",
                        {{"X-Content-Type-Options", "nosniff"}});
        });
    });
}

void api_router::handle_file_delete(const std::shared_ptr<http_exchange> &ex, const route_call &call) {
    auto *store = files_or_404(*ex);
    if (store == nullptr) {
        return;
    }
    if (!store->remove(owner_of(call.key_index), call.param)) {
        respond_error(*ex, file_not_found(call.param));
        return;
    }
    respond_file_json(*ex, {{"id", call.param}, {"object", "file"}, {"deleted", true}});
}

} // namespace inferbox
