// The Files API's HTTP side without a server: the upload route's body limit (the file store's, on
// that route only) and OpenAI's JSON shapes for a file, a list page and the refusals.
#include "api/errors.h"
#include "api/files.h"
#include "api/routes.h"

#include <gtest/gtest.h>

using namespace inferbox;
using json = nlohmann::json;

TEST(FilesApi, only_the_upload_route_admits_the_upload_limit) {
    constexpr size_t upload = (size_t{32} << 20) + (size_t{64} << 10);
    EXPECT_EQ(api_router::body_limit_for("/v1/files", http::verb::post, 1000, upload), upload);
    EXPECT_EQ(api_router::body_limit_for("/v1/files?x=1", http::verb::post, 1000, upload), upload);
    EXPECT_EQ(api_router::body_limit_for("/v1/files", http::verb::post, 1000, 0), 1000u); // no file store
    EXPECT_EQ(api_router::body_limit_for("/v1/files", http::verb::get, 1000, upload), 1000u);
    EXPECT_EQ(api_router::body_limit_for("/v1/files/file-1", http::verb::delete_, 1000, upload), 1000u);
    EXPECT_EQ(api_router::body_limit_for("/v1/chat/completions", http::verb::post, 1000, upload), 1000u);
    EXPECT_EQ(api_router::body_limit_for("/v1/embeddings", http::verb::post, 1000, upload), 1000u);
}

TEST(FilesApi, file_objects_and_pages_have_openai_shapes) {
    const file_record a{"file-aaa", "notes.md", "assistants", 41, 1700000000};
    const file_record b{"file-bbb", "r\xc3\xa9sum\xc3\xa9.pdf", "user_data", 7, 1700000001};
    EXPECT_EQ(file_object(a), json::parse(R"({"id": "file-aaa", "object": "file", "bytes": 41,
        "created_at": 1700000000, "expires_at": null, "filename": "notes.md", "purpose": "assistants",
        "status": "processed", "status_details": null})"));
    const auto page = file_list_json(file_page{{b, a}, true});
    EXPECT_EQ(page["object"], "list");
    EXPECT_EQ(page["data"].size(), 2u);
    EXPECT_EQ(page["data"][0]["filename"], "r\xc3\xa9sum\xc3\xa9.pdf");
    EXPECT_EQ(page["has_more"], true);
    EXPECT_EQ(page["first_id"], "file-bbb");
    EXPECT_EQ(page["last_id"], "file-aaa");
    const auto empty = file_list_json(file_page{});
    EXPECT_TRUE(empty["data"].is_array() && empty["data"].empty());
    EXPECT_TRUE(empty["first_id"].is_null() && empty["last_id"].is_null());
    EXPECT_EQ(empty["has_more"], false);
}

TEST(FilesApi, refusals_map_to_openai_errors) {
    const auto missing = json::parse(error_body(file_not_found("file-x")));
    EXPECT_EQ(map_error(file_not_found("file-x").kind).status, 404u);
    EXPECT_EQ(missing["error"]["code"], "file_not_found");
    EXPECT_EQ(missing["error"]["message"], "no file 'file-x'");
    auto big = parse_file_upload("multipart/form-data; boundary=b",
                                 "--b\r\nContent-Disposition: form-data; name=purpose\r\n\r\nassistants\r\n--b\r\n"
                                 "Content-Disposition: form-data; name=file; filename=a.txt\r\n\r\nxyz\r\n--b--",
                                 2);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(map_error(big.err().kind).status, 413u);
    const auto body = json::parse(error_body(big.err()));
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_EQ(body["error"]["param"], "file");
    EXPECT_EQ(body["error"]["code"], "file_too_large");
}
