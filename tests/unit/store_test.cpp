// The model store: import / list / find / remove in a temporary root, name validation, paths
// that try to leave the store, failed imports leaving nothing behind, and model references.

#include "store/gguf.h"
#include "store/store.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

using namespace inferbox;
namespace fs = std::filesystem;

namespace {

void put_u32(std::string &b, uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        b += char(uint8_t(v >> (8 * i)));
    }
}
void put_u64(std::string &b, uint64_t v) {
    for (int i = 0; i < 8; ++i) {
        b += char(uint8_t(v >> (8 * i)));
    }
}
void put_str(std::string &b, std::string_view s) {
    put_u64(b, s.size());
    b += s;
}

// A valid GGUF v3 with metadata and one F32 tensor of `n` elements (4n bytes of data).
std::string tiny_gguf(const std::string &arch = "llama", uint64_t n = 16) {
    std::string b = "GGUF";
    put_u32(b, 3);
    put_u64(b, 1); // tensors
    put_u64(b, 2); // metadata
    put_str(b, "general.architecture");
    put_u32(b, 8);
    put_str(b, arch);
    put_str(b, "llama.context_length");
    put_u32(b, 4);
    put_u32(b, 64);
    put_str(b, "w");
    put_u32(b, 1);
    put_u64(b, n);
    put_u32(b, 0); // F32
    put_u64(b, 0);
    b.resize((b.size() + 31) / 32 * 32, '\0');
    b += std::string(size_t(n * 4), '\x01');
    return b;
}

void write_file(const fs::path &p, std::string_view content) {
    std::ofstream f(p, std::ios::binary);
    f.write(content.data(), std::streamsize(content.size()));
}

std::string read_text(const fs::path &p) {
    std::ifstream f(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), {});
}

bool contains(const std::string &s, const std::string &part) {
    return s.find(part) != std::string::npos;
}

size_t count_entries(const fs::path &dir) {
    if (!fs::exists(dir)) {
        return 0;
    }
    return size_t(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

// The suite is named for --gtest_filter='Store*'.
class Store : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    void SetUp() override {
        std::string tmpl = (fs::temp_directory_path() / "inferbox-store-test-XXXXXX").string();
        ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
        base_ = tmpl;
        root_ = base_ / "cache";
        src_  = base_ / "src";
        fs::create_directories(src_);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(base_, ec);
    }

    fs::path source(const std::string &file, std::string_view content) {
        fs::path p = src_ / file;
        write_file(p, content);
        return p;
    }

    fs::path base_, root_, src_;
};

} // namespace

TEST_F(Store, import_list_find_remove) {
    model_store store(root_);
    EXPECT_EQ(store.root(), root_);
    auto empty = store.list();
    ASSERT_TRUE(empty.ok()) << empty.err().message;
    EXPECT_TRUE(empty->empty()); // a store that does not exist yet is empty

    const std::string content = tiny_gguf();
    const fs::path    src     = source("tiny-model.gguf", content);
    auto              e       = store.import(src);
    ASSERT_TRUE(e.ok()) << e.err().message;
    EXPECT_EQ(e->name, "tiny-model"); // the file's stem
    EXPECT_EQ(e->dir, root_ / "models" / "tiny-model");
    EXPECT_EQ(e->file, root_ / "models" / "tiny-model" / "model.gguf");
    EXPECT_TRUE(e->problem.empty());
    EXPECT_EQ(read_text(e->file), content);
    EXPECT_EQ(e->manifest.name, "tiny-model");
    EXPECT_EQ(e->manifest.size, content.size());
    EXPECT_EQ(e->manifest.source, src.string());
    auto hash = sha256_file(src);
    ASSERT_TRUE(hash.ok());
    EXPECT_EQ(e->manifest.sha256, *hash);
    EXPECT_EQ(e->manifest.sha256.size(), 64u);
    EXPECT_EQ(e->manifest.imported_at.size(), 20u); // 2025-01-31T12:00:00Z
    EXPECT_EQ(e->manifest.imported_at.back(), 'Z');
    const std::string manifest = read_text(e->dir / "manifest");
    EXPECT_TRUE(contains(manifest, "sha256=" + *hash + "\n")) << manifest;
    EXPECT_TRUE(contains(manifest, "size=" + std::to_string(content.size()) + "\n")) << manifest;
    EXPECT_EQ(count_entries(root_ / "tmp"), 0u); // the staging folder became the model

    auto org = store.import(src, "acme/tiny");
    ASSERT_TRUE(org.ok()) << org.err().message;
    EXPECT_EQ(org->dir, root_ / "models" / "acme+tiny");

    auto all = store.list();
    ASSERT_TRUE(all.ok()) << all.err().message;
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].name, "acme/tiny");
    EXPECT_EQ((*all)[1].name, "tiny-model");
    EXPECT_TRUE((*all)[0].problem.empty()) << (*all)[0].problem;

    auto found = store.find("acme/tiny");
    ASSERT_TRUE(found.ok()) << found.err().message;
    EXPECT_EQ(found->manifest.sha256, *hash);
    auto info = read_gguf_file(found->file);
    ASSERT_TRUE(info.ok()) << info.err().message;
    EXPECT_EQ(info->context_length, 64u);

    auto removed = store.remove("tiny-model");
    ASSERT_TRUE(removed.ok()) << removed.err().message;
    EXPECT_EQ(removed->name, "tiny-model");
    EXPECT_FALSE(fs::exists(root_ / "models" / "tiny-model"));
    EXPECT_EQ(count_entries(root_ / "tmp"), 0u);
    auto gone = store.find("tiny-model");
    ASSERT_FALSE(gone.ok());
    EXPECT_EQ(gone.err().kind, error_kind::not_found);
    EXPECT_TRUE(contains(gone.err().message, "'tiny-model' is not in the cache")) << gone.err().message;
    auto again = store.remove("tiny-model");
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.err().kind, error_kind::not_found);
    ASSERT_EQ(store.list()->size(), 1u);
    EXPECT_TRUE(fs::exists(src)); // the source is never touched
}

TEST_F(Store, import_refuses_a_taken_name) {
    model_store    store(root_);
    const fs::path a = source("a.gguf", tiny_gguf("llama", 16));
    const fs::path b = source("b.gguf", tiny_gguf("llama", 32));
    ASSERT_TRUE(store.import(a, "m").ok());
    auto second = store.import(b, "m");
    ASSERT_FALSE(second.ok());
    EXPECT_TRUE(contains(second.err().message, "'m' is already in the cache")) << second.err().message;
    EXPECT_EQ(read_text(store.find("m")->file), tiny_gguf("llama", 16)); // the first one is intact
    EXPECT_EQ(count_entries(root_ / "tmp"), 0u);
}

TEST_F(Store, failed_imports_leave_nothing_behind) {
    model_store       store(root_);
    const std::string good = tiny_gguf();
    // Truncated: the tensor data is cut short.
    const fs::path truncated = source("cut.gguf", good.substr(0, good.size() - 5));
    auto           r         = store.import(truncated);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.err().message.rfind(truncated.string() + ": truncated: tensor 'w' data ends at byte", 0), 0u)
        << r.err().message;
    // Not GGUF at all.
    const fs::path text = source("notes.gguf", "hello, this is not a model");
    auto           t    = store.import(text, "notes");
    ASSERT_FALSE(t.ok());
    EXPECT_TRUE(contains(t.err().message, text.string() + ": not a GGUF file")) << t.err().message;
    // Missing.
    auto m = store.import(src_ / "missing.gguf");
    ASSERT_FALSE(m.ok());
    EXPECT_TRUE(contains(m.err().message, "missing.gguf: cannot open")) << m.err().message;

    EXPECT_EQ(count_entries(root_ / "models"), 0u);
    EXPECT_EQ(count_entries(root_ / "tmp"), 0u);
    EXPECT_TRUE(store.list()->empty());
    EXPECT_EQ(store.find("cut").err().kind, error_kind::not_found);
}

TEST_F(Store, import_rejects_a_default_name_that_is_not_valid) {
    model_store    store(root_);
    const fs::path src = source("my model!.gguf", tiny_gguf());
    auto           r   = store.import(src);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.err().message, "cannot use the file name 'my model!' as a model name")) << r.err().message;
    EXPECT_TRUE(store.import(src, "my-model").ok());
}

TEST(StoreNames, validation) {
    // Dots and underscores anywhere are fine, a leading one included: only '.' and '..' as a whole
    // part would traverse (issue 24).
    const std::vector<std::string> good = {
        "tiny",  "org/tiny-1.5B_q8.v2", "A", "9", std::string(200, 'a'), "..my_model", "model..1", ".hidden", "org/_x",
        "a./..b"};
    for (const auto &n : good) {
        EXPECT_FALSE(validate_model_name(n)) << n << ": " << validate_model_name(n)->message;
    }
    struct bad_case {
        std::string name;
        std::string why;
    };
    const std::vector<bad_case> bad = {
        {"", "may not be empty"},
        {std::string(201, 'a'), "201 characters long, more than the limit of 200"},
        {"../x", "'.' or '..' parts"},
        {"/abs", "may not start with '/'"},
        {"/etc/passwd", "may not start with '/'"},
        {"a/../../b", "'.' or '..' parts"},
        {"a/..", "'.' or '..' parts"},
        {"./a", "'.' or '..' parts"},
        {"a/b/c", "more than two parts"},
        {"a//b", "more than two parts"},
        {"a/", "empty part"},
        {"bad name", "may only contain"},
        {"semi;colon", "may only contain"},
        {"back\\slash", "may only contain"},
        {std::string("nul\0byte", 8), "may only contain"},
        {"tab\there", "may only contain"},
        {"ünïcode", "may only contain"},
        {"a+b", "may only contain"},
        {"-rf", "may not start with '-'"},
        {"org/-x", "may not start with '-'"},
        {"model.gguf", "may not end in '.gguf'"},
    };
    for (const auto &c : bad) {
        auto problem = validate_model_name(c.name);
        ASSERT_TRUE(problem) << "accepted: " << c.name;
        EXPECT_EQ(problem->kind, error_kind::invalid_request);
        EXPECT_TRUE(contains(problem->message, c.why)) << c.name << " → " << problem->message;
    }
    // Control characters are escaped in the message, never printed raw.
    auto esc = validate_model_name("x\x1b[2J");
    ASSERT_TRUE(esc);
    EXPECT_TRUE(contains(esc->message, "'x\\x1b[2J'")) << esc->message;
}

TEST_F(Store, bad_names_never_touch_the_file_system) {
    model_store    store(root_);
    const fs::path src = source("m.gguf", tiny_gguf());
    for (const std::string name : {"../x", "/abs", "a/../../b", "../../../tmp/evil"}) {
        auto i = store.import(src, name);
        ASSERT_FALSE(i.ok()) << name;
        EXPECT_EQ(i.err().kind, error_kind::invalid_request);
        EXPECT_FALSE(store.find(name).ok());
        EXPECT_FALSE(store.remove(name).ok());
    }
    EXPECT_FALSE(fs::exists(root_)); // nothing was created
    EXPECT_FALSE(fs::exists(base_ / "x"));
}

TEST_F(Store, a_symlink_out_of_the_store_is_refused) {
    model_store store(root_);
    ASSERT_TRUE(store.import(source("ok.gguf", tiny_gguf()), "ok").ok());

    // A folder outside the store that looks like a model, and a link to it inside models/.
    const fs::path outside = base_ / "outside";
    fs::create_directories(outside);
    write_file(outside / "model.gguf", tiny_gguf());
    write_file(outside / "manifest", "format=1\nname=evil\nsize=" + std::to_string(tiny_gguf().size()) + "\n");
    fs::create_directory_symlink(outside, root_ / "models" / "evil");

    auto f = store.find("evil");
    ASSERT_FALSE(f.ok());
    EXPECT_EQ(f.err().kind, error_kind::invalid_request);
    EXPECT_TRUE(contains(f.err().message, "outside the store")) << f.err().message;
    auto r = store.remove("evil");
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(contains(r.err().message, "outside the store")) << r.err().message;
    EXPECT_TRUE(fs::exists(outside / "model.gguf")); // nothing outside was deleted
    EXPECT_TRUE(fs::exists(outside / "manifest"));
    auto imp = store.import(source("e.gguf", tiny_gguf()), "evil");
    ASSERT_FALSE(imp.ok());
    EXPECT_EQ(count_entries(outside), 2u); // nothing was written through the link

    // The listing shows it as broken instead of failing or following it.
    auto all = store.list();
    ASSERT_TRUE(all.ok()) << all.err().message;
    ASSERT_EQ(all->size(), 2u);
    EXPECT_EQ((*all)[0].name, "evil");
    EXPECT_TRUE(contains((*all)[0].problem, "outside the store")) << (*all)[0].problem;
    EXPECT_TRUE((*all)[1].problem.empty());
}

TEST_F(Store, a_symlinked_model_file_is_refused) {
    model_store store(root_);
    auto        e = store.import(source("ok.gguf", tiny_gguf()), "ok");
    ASSERT_TRUE(e.ok());
    const fs::path secret = base_ / "secret.gguf";
    write_file(secret, tiny_gguf());
    fs::remove(e->file);
    fs::create_symlink(secret, e->file);

    auto f = store.find("ok");
    ASSERT_FALSE(f.ok());
    EXPECT_TRUE(contains(f.err().message, "is not a regular file")) << f.err().message;
    // rm removes the broken entry, and only the link, never its target.
    auto r = store.remove("ok");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_TRUE(fs::exists(secret));
    EXPECT_FALSE(fs::exists(fs::symlink_status(e->dir)));
}

TEST_F(Store, a_tampered_entry_is_reported) {
    model_store store(root_);
    auto        e = store.import(source("ok.gguf", tiny_gguf()), "ok");
    ASSERT_TRUE(e.ok());
    fs::resize_file(e->file, 10);
    auto f = store.find("ok");
    ASSERT_FALSE(f.ok());
    EXPECT_TRUE(contains(f.err().message, "has 10 bytes but the manifest records")) << f.err().message;

    write_file(e->dir / "manifest", "format=7\n");
    f = store.find("ok");
    ASSERT_FALSE(f.ok());
    EXPECT_TRUE(contains(f.err().message, "manifest format '7' is not supported")) << f.err().message;

    fs::remove(e->dir / "manifest");
    f = store.find("ok");
    ASSERT_FALSE(f.ok());
    EXPECT_TRUE(contains(f.err().message, "manifest is missing")) << f.err().message;
    auto all = store.list();
    ASSERT_TRUE(all.ok());
    ASSERT_EQ(all->size(), 1u);
    EXPECT_FALSE((*all)[0].problem.empty());
    EXPECT_TRUE(store.remove("ok").ok()); // a broken entry can still be removed
    EXPECT_TRUE(store.list()->empty());
}

TEST_F(Store, stale_staging_folders_are_cleaned_up) {
    model_store store(root_);
    ASSERT_TRUE(store.import(source("a.gguf", tiny_gguf()), "a").ok());
    const fs::path stale = root_ / "tmp" / "import-1-2-deadbeef";
    const fs::path fresh = root_ / "tmp" / "import-3-4-cafebabe";
    fs::create_directories(stale);
    fs::create_directories(fresh);
    write_file(stale / "model.gguf", "partial");
    fs::last_write_time(stale, fs::file_time_type::clock::now() - std::chrono::hours(48));
    ASSERT_TRUE(store.import(source("b.gguf", tiny_gguf()), "b").ok());
    EXPECT_FALSE(fs::exists(stale));
    EXPECT_TRUE(fs::exists(fresh));      // may belong to an import still running
    ASSERT_EQ(store.list()->size(), 2u); // staging folders never look like models
}

TEST(StoreRoot, default_root_follows_the_environment) {
    const char       *old_cache = std::getenv("INFERBOX_CACHE");
    const std::string saved     = old_cache ? old_cache : "";
    ::setenv("INFERBOX_CACHE", "/some/where", 1);
    auto r = model_store::default_root();
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, fs::path("/some/where"));
    ::setenv("INFERBOX_CACHE", "", 1);
    r = model_store::default_root();
    ASSERT_TRUE(r.ok());
    const char *home = std::getenv("HOME");
    if (home && *home) {
        EXPECT_EQ(*r, fs::path(home) / ".cache" / "inferbox");
    }
    if (old_cache) {
        ::setenv("INFERBOX_CACHE", saved.c_str(), 1);
    } else {
        ::unsetenv("INFERBOX_CACHE");
    }
}

TEST_F(Store, sha256_of_a_known_file) {
    const fs::path p = source("abc", "abc");
    auto           h = sha256_file(p);
    ASSERT_TRUE(h.ok()) << h.err().message;
    EXPECT_EQ(*h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_FALSE(sha256_file(src_ / "nope").ok());
}

// --- references -------------------------------------------------------------------------------

TEST(StoreRef, hugging_face) {
    auto r = parse_model_ref("hf://TheOrg/tiny-repo/tiny.Q8_0.gguf");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::hugging_face);
    EXPECT_EQ(r->org, "TheOrg");
    EXPECT_EQ(r->repo, "tiny-repo");
    EXPECT_EQ(r->file, "tiny.Q8_0.gguf");
    EXPECT_EQ(r->revision, "");

    r = parse_model_ref("hf://org/repo/sub/dir/model-00001-of-00002.gguf@v1.0");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->file, "sub/dir/model-00001-of-00002.gguf");
    EXPECT_EQ(r->revision, "v1.0");

    r = parse_model_ref("hf://org/repo/m.gguf@refs/pr/3");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->revision, "refs/pr/3");

    const std::vector<std::pair<std::string, std::string>> bad = {
        {"hf://org/repo", "is not hf://ORG/REPO/FILE.gguf"},
        {"hf://org/repo/model.bin", "must be a .gguf file"},
        {"hf://org/repo/../x.gguf", "'.' or '..' parts"},
        {"hf://org/repo//x.gguf", "empty, '.' or '..' parts"},
        {"hf://../repo/x.gguf", "the organisation may not be '.' or '..'"},
        {"hf://o rg/repo/x.gguf", "may only contain"},
        {"hf:///repo/x.gguf", "the organisation must be 1 to 96 characters"},
        {"hf://org/repo/x.gguf@", "the revision after '@' must be 1 to 255 characters"},
        {"hf://org/repo/x.gguf@a/../b", "the revision may not contain empty, '.' or '..' parts"},
        {"hf://org/repo/x.gguf@a b", "the revision may only contain"},
    };
    for (const auto &[ref, why] : bad) {
        auto b = parse_model_ref(ref);
        ASSERT_FALSE(b.ok()) << "accepted: " << ref;
        EXPECT_TRUE(contains(b.err().message, why)) << ref << " → " << b.err().message;
    }
}

TEST(StoreRef, urls_and_schemes) {
    auto r = parse_model_ref("https://example.com/models/tiny.gguf?download=1");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::url);
    EXPECT_EQ(r->url, "https://example.com/models/tiny.gguf?download=1");
    r = parse_model_ref("http://127.0.0.1:8080/m.gguf");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::url);

    auto nohost = parse_model_ref("https:///m.gguf");
    ASSERT_FALSE(nohost.ok());
    EXPECT_TRUE(contains(nohost.err().message, "has no host"));
    auto space = parse_model_ref("https://example.com/a b.gguf");
    ASSERT_FALSE(space.ok());
    EXPECT_TRUE(contains(space.err().message, "contains a space"));
    auto ftp = parse_model_ref("ftp://example.com/m.gguf");
    ASSERT_FALSE(ftp.ok());
    EXPECT_TRUE(contains(ftp.err().message, "the scheme 'ftp' is not supported")) << ftp.err().message;
    auto file = parse_model_ref("file:///etc/passwd");
    ASSERT_FALSE(file.ok());
    EXPECT_TRUE(contains(file.err().message, "the scheme 'file' is not supported"));
    auto ctl = parse_model_ref("https://example.com/\n");
    ASSERT_FALSE(ctl.ok());
    EXPECT_TRUE(contains(ctl.err().message, "control characters"));
    auto empty = parse_model_ref("");
    ASSERT_FALSE(empty.ok());
    EXPECT_TRUE(contains(empty.err().message, "empty"));
    auto huge = parse_model_ref(std::string(5000, 'a'));
    ASSERT_FALSE(huge.ok());
    EXPECT_TRUE(contains(huge.err().message, "more than the limit of 4096"));
}

TEST_F(Store, references_to_paths_and_names) {
    const fs::path model = source("tiny.gguf", tiny_gguf());
    auto           r     = parse_model_ref(model.string());
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::local_path);
    EXPECT_EQ(r->path, model);

    // An existing file without the .gguf extension, named by a path with '/'.
    const fs::path bin = source("weights.bin", tiny_gguf());
    r                  = parse_model_ref(bin.string());
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::local_path);

    auto missing = parse_model_ref((src_ / "missing.gguf").string());
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.err().kind, error_kind::not_found);
    EXPECT_TRUE(contains(missing.err().message, "no such file")) << missing.err().message;
    auto rel = parse_model_ref("./nope/missing.gguf");
    ASSERT_FALSE(rel.ok());
    EXPECT_EQ(rel.err().kind, error_kind::not_found);
    auto bare = parse_model_ref("definitely-not-here.gguf");
    ASSERT_FALSE(bare.ok());
    EXPECT_TRUE(contains(bare.err().message, "no such file")) << bare.err().message;
    auto dir = parse_model_ref(src_.string());
    ASSERT_FALSE(dir.ok());
    EXPECT_TRUE(contains(dir.err().message, "is a directory")) << dir.err().message;

    r = parse_model_ref("tiny");
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::cached_name);
    EXPECT_EQ(r->name, "tiny");
    r = parse_model_ref("acme/tiny-1.5B"); // no such file: a cached name
    ASSERT_TRUE(r.ok()) << r.err().message;
    EXPECT_EQ(r->kind, model_ref_kind::cached_name);
    EXPECT_EQ(r->name, "acme/tiny-1.5B");

    auto bad = parse_model_ref("what is this?");
    ASSERT_FALSE(bad.ok());
    EXPECT_TRUE(contains(bad.err().message, "is neither a model name nor an existing file")) << bad.err().message;
    auto deep = parse_model_ref("a/b/c");
    ASSERT_FALSE(deep.ok());
    EXPECT_TRUE(contains(deep.err().message, "more than two parts")) << deep.err().message;
}

TEST_F(Store, a_generated_model_is_added_whole_or_not_at_all) {
    model_store       store(root_);
    const std::string good = tiny_gguf();
    // The writer gets a path in a staging folder, not in models/.
    fs::path seen;
    auto     e = store.import_generated("gen", "/from/here.gguf", [&](const fs::path &out) -> std::optional<error> {
        seen = out;
        EXPECT_EQ(out.parent_path().parent_path(), root_ / "tmp");
        write_file(out, good);
        return std::nullopt;
    });
    ASSERT_TRUE(e.ok()) << e.err().message;
    EXPECT_EQ(read_text(e->file), good);
    EXPECT_EQ(e->manifest.source, "/from/here.gguf");
    EXPECT_EQ(e->manifest.size, good.size());
    EXPECT_EQ(e->manifest.sha256, *sha256_file(e->file));
    EXPECT_FALSE(fs::exists(seen));
    // A writer that fails, after writing part of a file, or that writes something not GGUF: nothing stays.
    auto failed = store.import_generated("bad", "x", [&](const fs::path &out) -> std::optional<error> {
        write_file(out, good.substr(0, 10));
        return error::invalid("the quantizer failed");
    });
    ASSERT_FALSE(failed.ok());
    EXPECT_EQ(failed.err().message, "the quantizer failed");
    auto garbage = store.import_generated("bad", "x", [&](const fs::path &out) -> std::optional<error> {
        write_file(out, good.substr(0, good.size() - 5));
        return std::nullopt;
    });
    ASSERT_FALSE(garbage.ok());
    EXPECT_TRUE(contains(garbage.err().message, "truncated")) << garbage.err().message;
    // A taken name or a bad one fails before the writer runs.
    bool ran   = false;
    auto taken = store.import_generated("gen", "x", [&](const fs::path &) -> std::optional<error> {
        ran = true;
        return std::nullopt;
    });
    EXPECT_FALSE(taken.ok());
    EXPECT_FALSE(store
                     .import_generated("../out", "x",
                                       [&](const fs::path &) -> std::optional<error> {
                                           ran = true;
                                           return std::nullopt;
                                       })
                     .ok());
    EXPECT_FALSE(ran);
    EXPECT_EQ(count_entries(root_ / "models"), 1u);
    EXPECT_EQ(count_entries(root_ / "tmp"), 0u);
}
