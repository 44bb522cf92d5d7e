// The pieces of `inferbox pull` that need no network: header parsing, retry policy, source URLs,
// default cache names, progress text, and the store's adopt() of a finished download.
#include "cli/output.h"
#include "fetch/download.h"
#include "fetch/pull.h"
#include "store/store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace inferbox {
namespace {

namespace fs = std::filesystem;

TEST(pull, linked_etag_gives_the_sha256_only_when_it_is_one) {
    const std::string sha = "1F2e3d4c5b6a79881F2e3d4c5b6a79881F2e3d4c5b6a79881F2e3d4c5b6a7988";
    EXPECT_EQ(sha256_from_linked_etag("\"" + sha + "\""),
              "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c5b6a7988");
    EXPECT_EQ(sha256_from_linked_etag("W/\"" + sha + "\""), sha256_from_linked_etag(sha));
    EXPECT_EQ(sha256_from_linked_etag("  " + sha + "\r\n"), sha256_from_linked_etag(sha));
    // A git blob id (40 hex digits, what small non-LFS files get) is not a SHA-256.
    EXPECT_EQ(sha256_from_linked_etag("\"0123456789abcdef0123456789abcdef01234567\""), "");
    EXPECT_EQ(sha256_from_linked_etag("\"" + sha.substr(1) + "g\""), "");
    EXPECT_EQ(sha256_from_linked_etag(""), "");
    EXPECT_EQ(sha256_from_linked_etag("\""), "");
}

TEST(pull, content_range) {
    auto r = parse_content_range("bytes 100-199/1000");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->first, 100u);
    ASSERT_TRUE(r->total);
    EXPECT_EQ(*r->total, 1000u);
    r = parse_content_range("bytes 0-0/*");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->first, 0u);
    EXPECT_FALSE(r->total);
    EXPECT_FALSE(parse_content_range("bytes */1000")); // unsatisfied: no first byte
    EXPECT_FALSE(parse_content_range("bytes 200-100/1000"));
    EXPECT_FALSE(parse_content_range("bytes 0-1000/1000")); // last byte past the end
    EXPECT_FALSE(parse_content_range("items 0-1/2"));
    EXPECT_FALSE(parse_content_range("bytes 0-1"));
    EXPECT_FALSE(parse_content_range("bytes -1-2/3"));
    EXPECT_FALSE(parse_content_range("bytes 1-99999999999999999999999/3"));
    EXPECT_FALSE(parse_content_range(""));
}

TEST(pull, retryable_statuses) {
    for (long s : {408L, 425L, 429L, 500L, 502L, 503L, 504L, 599L}) {
        EXPECT_TRUE(retryable_status(s)) << s;
    }
    for (long s : {200L, 206L, 301L, 400L, 401L, 403L, 404L, 410L, 416L, 600L}) {
        EXPECT_FALSE(retryable_status(s)) << s;
    }
}

model_ref ref_of(const std::string &text) {
    auto r = parse_model_ref(text);
    EXPECT_TRUE(r) << text << ": " << (r ? "" : r.err().message);
    return r ? *r : model_ref{};
}

TEST(pull, source_url_encodes_the_revision_as_one_segment) {
    const std::string ep = "https://huggingface.co";
    EXPECT_EQ(source_url(ref_of("hf://org/repo/m.gguf"), ep), "https://huggingface.co/org/repo/resolve/main/m.gguf");
    EXPECT_EQ(source_url(ref_of("hf://org/repo/sub/dir/m.gguf@refs/pr/7"), ep),
              "https://huggingface.co/org/repo/resolve/refs%2Fpr%2F7/sub/dir/m.gguf");
    EXPECT_EQ(source_url(ref_of("hf://org/repo/m.gguf@v1.0"), "http://127.0.0.1:9"),
              "http://127.0.0.1:9/org/repo/resolve/v1.0/m.gguf");
    EXPECT_EQ(source_url(ref_of("https://example.com/a/b.gguf?x=1"), ep), "https://example.com/a/b.gguf?x=1");
}

TEST(pull, default_names) {
    auto n = default_model_name(ref_of("hf://TheOrg/Some-Repo/sub/Llama-3.2-1B.Q4_K_M.gguf@main"));
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, "TheOrg/Llama-3.2-1B.Q4_K_M");
    n = default_model_name(ref_of("https://example.com/files/tiny%20model.gguf?download=1"));
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, "tiny-20model");
    n = default_model_name(ref_of("https://example.com/-_.weird.gguf"));
    ASSERT_TRUE(n);
    EXPECT_EQ(*n, "weird");
    EXPECT_FALSE(default_model_name(ref_of("https://example.com")));
    EXPECT_FALSE(default_model_name(ref_of("https://example.com/.gguf")));
    EXPECT_FALSE(default_model_name(ref_of("some-name")));
}

TEST(pull, progress_text) {
    download_progress p;
    p.received = 512u << 20;
    p.total    = uint64_t{1} << 30;
    p.seconds  = 8;
    EXPECT_EQ(format_progress(p, false), "512 MiB of 1.0 GiB (50%), ETA 0:08 at 64 MiB/s");
    EXPECT_EQ(format_progress(p, true), " 50% [############            ] 512 MiB / 1.0 GiB  ETA 0:08  64 MiB/s");
    p.resumed_from = 256u << 20; // only what this run fetched counts for the rate
    EXPECT_EQ(format_progress(p, false), "512 MiB of 1.0 GiB (50%), ETA 0:16 at 32 MiB/s");
    p.total.reset();
    p.seconds = 0;
    EXPECT_EQ(format_progress(p, false), "512 MiB");
}

class pull_store : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = fs::temp_directory_path() / ("inferbox-pull-test-" + std::to_string(::getpid()));
        fs::remove_all(root_);
        const char *models = std::getenv("INFERBOX_TEST_MODELS");
        model_             = fs::path(models != nullptr ? models : "../shared/models") / "stories260K.gguf";
    }
    void TearDown() override { fs::remove_all(root_); }

    // A copy of the test model in the store's downloads folder, as a finished download.
    fs::path staged_download() {
        const model_store store(root_);
        auto              dir = store.downloads_dir();
        EXPECT_TRUE(dir);
        fs::path part = *dir / "x.part";
        fs::copy_file(model_, part);
        return part;
    }

    fs::path root_, model_;
};

TEST_F(pull_store, adopt_moves_a_download_into_the_store) {
    ASSERT_TRUE(fs::exists(model_)) << model_ << " is missing: set INFERBOX_TEST_MODELS";
    const model_store store(root_);
    const fs::path    part = staged_download();
    auto              sha  = sha256_file(part);
    ASSERT_TRUE(sha);
    auto e = store.adopt(part, "org/m", "hf://org/repo/m.gguf", *sha, fs::file_size(part));
    ASSERT_TRUE(e) << e.err().message;
    EXPECT_FALSE(fs::exists(part));
    EXPECT_EQ(e->manifest.source, "hf://org/repo/m.gguf");
    EXPECT_EQ(e->manifest.sha256, *sha);
    auto again = sha256_file(e->file);
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, *sha);

    // Taken name: refused, and the second download is deleted rather than left behind.
    const fs::path part2 = staged_download();
    auto           dup   = store.adopt(part2, "org/m", "elsewhere", *sha, fs::file_size(part2));
    ASSERT_FALSE(dup);
    EXPECT_NE(dup.err().message.find("already in the cache"), std::string::npos) << dup.err().message;
    EXPECT_FALSE(fs::exists(part2));
}

TEST_F(pull_store, adopt_refuses_a_file_that_is_not_gguf) {
    const model_store store(root_);
    auto              dir = store.downloads_dir();
    ASSERT_TRUE(dir);
    const fs::path part = *dir / "html.part";
    std::ofstream(part) << "<html>login</html>\n";
    auto e = store.adopt(part, "page", "https://example.com/page.gguf", "00", 19);
    ASSERT_FALSE(e);
    EXPECT_FALSE(fs::exists(part));
    auto list = store.list();
    ASSERT_TRUE(list);
    EXPECT_TRUE(list->empty());
    EXPECT_TRUE(fs::is_empty(root_ / "tmp"));
}

TEST(pull, sha256_stream_matches_sha256_file_and_resumes_from_a_file_prefix) {
    const fs::path f = fs::temp_directory_path() / ("inferbox-sha-" + std::to_string(::getpid()));
    std::ofstream(f) << "hello world";
    auto whole = sha256_file(f);
    ASSERT_TRUE(whole);
    EXPECT_EQ(*whole, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    sha256_stream s;
    ASSERT_FALSE(s.update_from_file(f, 6)); // "hello "
    s.update("world", 5);
    EXPECT_EQ(s.hex_digest(), *whole);
    s.reset();
    auto short_file = s.update_from_file(f, 100);
    ASSERT_TRUE(short_file);
    EXPECT_NE(short_file->message.find("shorter than expected"), std::string::npos);
    fs::remove(f);
    EXPECT_TRUE(looks_like_sha256(*whole));
    EXPECT_FALSE(looks_like_sha256(whole->substr(1)));
}

} // namespace
} // namespace inferbox
