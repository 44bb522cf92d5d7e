// The multipart/form-data reader (files/multipart.h) and the upload it makes for POST /v1/files
// (files/file_store.h parse_file_upload): what clients send is read exactly, and every malformed
// or oversized body is refused with an error naming the problem.
#include "files/file_store.h"
#include "files/multipart.h"

#include <gtest/gtest.h>

#include <string>

using namespace inferbox;

namespace {

const std::string ctype = "multipart/form-data; boundary=XyZ";

std::string part(const std::string &disposition, const std::string &data, const std::string &extra = "") {
    return "--XyZ\r\nContent-Disposition: " + disposition + "\r\n" + extra + "\r\n" + data + "\r\n";
}

std::string upload_body(const std::string &data, const std::string &filename = "notes.txt",
                        const std::string &purpose = "assistants") {
    return part("form-data; name=\"purpose\"", purpose) +
           part("form-data; name=\"file\"; filename=\"" + filename + "\"", data, "Content-Type: text/plain\r\n") +
           "--XyZ--\r\n";
}

// The error message of a body that must be refused (empty when it was accepted).
std::string refusal(const std::string &body, const std::string &type = ctype, multipart_limits lim = {}) {
    auto r = parse_multipart(type, body, lim);
    return r.ok() ? std::string() : r.err().message;
}

} // namespace

TEST(Multipart, reads_fields_and_files_exactly) {
    // Bytes like a boundary but not a delimiter (no CRLF before, or another case), a NUL, a blank line.
    const std::string data = std::string("line one --XyZ\r\n-XyZ\r\n--xyz\r\n\r\nbinary \0\xff end", 44);
    const std::string body =
        "--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n" +
        part("form-data; name=\"file\"; filename=\"a \\\"b\\\".txt\"", data, "Content-Type: text/plain\r\n") +
        "--XyZ--\r\nepilogue is ignored";
    auto parts = parse_multipart(ctype, body, {});
    ASSERT_TRUE(parts.ok()) << parts.err().message;
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].name, "purpose");
    EXPECT_FALSE((*parts)[0].filename);
    EXPECT_EQ((*parts)[0].data, "assistants");
    EXPECT_EQ((*parts)[1].name, "file");
    ASSERT_TRUE((*parts)[1].filename);
    EXPECT_EQ(*(*parts)[1].filename, "a \"b\".txt");
    EXPECT_EQ((*parts)[1].content_type, "text/plain");
    EXPECT_EQ((*parts)[1].data, data);
}

TEST(Multipart, accepts_what_real_clients_vary) {
    // Quoted boundary with RFC 2046's odd characters, case-insensitive names, unquoted tokens,
    // transport padding after a boundary, an empty file, ignored headers, a 7bit encoding.
    const std::string type  = "Multipart/Form-Data ; charset=utf-8; boundary=\"a b:c?\"";
    const std::string body  = "--a b:c? \t\r\ncontent-disposition: FORM-DATA; NAME=file; filename=\"\"\r\n"
                              "X-Whatever: 1\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\r\n--a b:c?--";
    auto              parts = parse_multipart(type, body, {});
    ASSERT_TRUE(parts.ok()) << parts.err().message;
    ASSERT_EQ(parts->size(), 1u);
    EXPECT_EQ((*parts)[0].name, "file");
    ASSERT_TRUE((*parts)[0].filename);
    EXPECT_EQ(*(*parts)[0].filename, "");
    EXPECT_EQ((*parts)[0].data, "");
}

TEST(Multipart, refuses_bad_content_types) {
    EXPECT_NE(refusal("", "application/json").find("not multipart/form-data"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/mixed; boundary=x").find("not multipart/form-data"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data").find("no boundary"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=").find("no value"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=" + std::string(71, 'a')).find("1 to 70"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=\"a\\\x01\"").find("malformed quoted"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=\"ends in space \"").find("1 to 70"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=a; boundary=b").find("twice"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=\"unclosed").find("malformed quoted"), std::string::npos);
    EXPECT_NE(refusal("", "multipart/form-data; boundary=a x").find("where ';'"), std::string::npos);
}

TEST(Multipart, refuses_every_malformed_body) {
    const std::string ok_part = part("form-data; name=\"a\"", "1");
    const struct {
        std::string body, expect;
    } cases[] = {
        {"", "does not start with its boundary"},
        {"preamble\r\n" + ok_part + "--XyZ--", "does not start with its boundary"},
        {"--XyZ--", "no parts"},
        {"--XyZ", "ends before its closing boundary"},
        {"--XyZx\r\n", "neither CRLF nor --"},
        {"--XyZ\r\nContent-Disposition: form-data; name=a\r\n", "ends inside part 1's headers"},
        {ok_part, "no boundary after its data"},
        {"--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nno end", "no boundary after its data"},
        {"--XyZ\r\n\r\ndata\r\n--XyZ--", "no Content-Disposition"},
        {"--XyZ\r\nContent-Type: text/plain\r\n\r\ndata\r\n--XyZ--", "no Content-Disposition"},
        {part("attachment; name=a", "x") + "--XyZ--", "not form-data"},
        {part("form-data; filename=x", "x") + "--XyZ--", "has no name"},
        {part("form-data; name=\"\"", "x") + "--XyZ--", "has no name"},
        {part("form-data; name=a; name=b", "x") + "--XyZ--", "twice"},
        {part("form-data; name", "x") + "--XyZ--", "malformed parameter"},
        {part("form-data; name=\"a", "x") + "--XyZ--", "malformed quoted"},
        {part("form-data; name=a", "x", "Content-Disposition: form-data; name=b\r\n") + "--XyZ--",
         "two Content-Disposition"},
        {part("form-data; name=a", "x", "Content-Type: a\r\nContent-Type: b\r\n") + "--XyZ--", "two Content-Type"},
        {part("form-data; name=a", "x", "Content-Transfer-Encoding: base64\r\n") + "--XyZ--", "base64"},
        {part("form-data; name=a", "x", " folded\r\n") + "--XyZ--", "folds a header line"},
        {part("form-data; name=a", "x", "No colon here\r\n") + "--XyZ--", "malformed header line"},
        {part("form-data; name=a", "x", "X: a\x01z\r\n") + "--XyZ--", "control character"},
        {part("form-data; name=a", "x", "X: bare\rCR\r\n") + "--XyZ--", "bare CR"},
        {part("form-data; name=a", "x", "X: bare\nLF\r\n") + "--XyZ--", "bare CR, LF"},
        {ok_part + "--XyZ junk\r\n", "neither CRLF nor --"},
    };
    for (const auto &c : cases) {
        const auto why = refusal(c.body);
        EXPECT_NE(why.find(c.expect), std::string::npos) << "body: " << c.body << "\nerror: " << why;
    }
}

TEST(Multipart, bounds_parts_headers_and_body_naming_the_limit) {
    multipart_limits lim;
    lim.max_parts        = 2;
    lim.max_header_bytes = 100;
    lim.max_body_bytes   = 300;
    const std::string p  = part("form-data; name=a", "x");
    EXPECT_EQ(refusal(p + p + "--XyZ--", ctype, lim), "");
    auto three = parse_multipart(ctype, p + p + p + "--XyZ--", lim);
    ASSERT_FALSE(three.ok());
    EXPECT_EQ(three.err().kind, error_kind::payload_too_large);
    EXPECT_NE(three.err().message.find("more than 2 parts"), std::string::npos);

    const auto long_header = part("form-data; name=a", "x", "X-Pad: " + std::string(100, 'p') + "\r\n") + "--XyZ--";
    auto       header      = parse_multipart(ctype, long_header, lim);
    ASSERT_FALSE(header.ok());
    EXPECT_EQ(header.err().kind, error_kind::payload_too_large);
    EXPECT_NE(header.err().message.find("exceed 100 bytes"), std::string::npos);

    auto big = parse_multipart(ctype, part("form-data; name=a", std::string(300, 'x')) + "--XyZ--", lim);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().kind, error_kind::payload_too_large);
    EXPECT_NE(big.err().message.find("the limit is 300"), std::string::npos);
}

TEST(FileUpload, reads_the_file_and_its_purpose) {
    // The upload's fields view the body: it must outlive them.
    const std::string body = upload_body("hello");
    auto              up   = parse_file_upload(ctype, body, 1024);
    ASSERT_TRUE(up.ok()) << up.err().message;
    EXPECT_EQ(up->filename, "notes.txt");
    EXPECT_EQ(up->purpose, "assistants");
    EXPECT_EQ(up->bytes, "hello");
    EXPECT_TRUE(parse_file_upload(ctype, upload_body("x", "r\xc3\xa9sum\xc3\xa9.md", "user_data"), 1024).ok());
}

TEST(FileUpload, refuses_what_the_files_api_does_not_take) {
    const auto why = [](const std::string &body, int64_t max = 1024) {
        auto r = parse_file_upload(ctype, body, max);
        return r.ok() ? std::string() : r.err().message + " [param " + r.err().param + "]";
    };
    auto big = parse_file_upload(ctype, upload_body(std::string(1025, 'x')), 1024);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().kind, error_kind::payload_too_large);
    EXPECT_EQ(big.err().code, "file_too_large");
    EXPECT_NE(big.err().message.find("the limit is 1024 bytes (--files-max-bytes)"), std::string::npos);

    EXPECT_NE(why(upload_body("x", "n.txt", "chat")).find("purpose must be one of"), std::string::npos);
    EXPECT_NE(why(upload_body("x", "")).find("filename must be"), std::string::npos);
    EXPECT_NE(why(upload_body("x", std::string(256, 'n'))).find("filename must be"), std::string::npos);
    EXPECT_NE(why(upload_body("x", "a\x01.txt")).find("control character"), std::string::npos);
    EXPECT_NE(why(upload_body("x", "bad\xff.txt")).find("filename must be"), std::string::npos);
    EXPECT_NE(why(part("form-data; name=purpose", "assistants") + "--XyZ--").find("no file field"), std::string::npos);
    EXPECT_NE(why(part("form-data; name=file; filename=a.txt", "x") + "--XyZ--").find("purpose is required"),
              std::string::npos);
    EXPECT_NE(why(part("form-data; name=file", "x") + part("form-data; name=purpose", "assistants") + "--XyZ--")
                  .find("no filename"),
              std::string::npos);
    EXPECT_NE(why(part("form-data; name=file; filename=a", "x") + part("form-data; name=file; filename=b", "y") +
                  part("form-data; name=purpose", "assistants") + "--XyZ--")
                  .find("two file fields"),
              std::string::npos);
    EXPECT_NE(why(upload_body("x").insert(0, part("form-data; name=expires_after", "1"))).find("unknown field"),
              std::string::npos);
    EXPECT_NE(why("{}").find("does not start with its boundary"), std::string::npos);
}
