// The LoRA adapter folder: the two layouts, what is skipped and why (not GGUF, not a LoRA, another
// architecture, a bad name, a symlink leaving the folder, a folder with two files), rescans on
// demand at most once per interval, and names that try to leave the folder.

#include "store/lora_catalog.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

using namespace inferbox;
namespace fs = std::filesystem;

namespace {

void put_le(std::string &b, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) {
        b += static_cast<char>(static_cast<uint8_t>(v >> (8 * i)));
    }
}
void put_str(std::string &b, std::string_view s) {
    put_le(b, s.size(), 8);
    b += s;
}

// A GGUF v3 with string metadata and one F32 tensor of 16 elements.
std::string gguf_with(const std::vector<std::pair<std::string, std::string>> &kv) {
    std::string b = "GGUF";
    put_le(b, 3, 4);
    put_le(b, 1, 8);
    put_le(b, kv.size(), 8);
    for (const auto &[k, v] : kv) {
        put_str(b, k);
        put_le(b, 8, 4); // string
        put_str(b, v);
    }
    put_str(b, "lora_a");
    put_le(b, 1, 4);
    put_le(b, 16, 8);
    put_le(b, 0, 4); // F32
    put_le(b, 0, 8);
    b.resize((b.size() + 31) / 32 * 32, '\0');
    b += std::string(64, '\x01');
    return b;
}

std::string adapter(const std::string &arch = "llama") {
    return gguf_with({{"general.architecture", arch}, {"general.type", "adapter"}, {"adapter.type", "lora"}});
}

void write_file(const fs::path &p, std::string_view content) {
    std::ofstream f(p, std::ios::binary);
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
}

struct temp_dir {
    temp_dir() {
        std::string t = (fs::temp_directory_path() / "inferbox-lora-XXXXXX").string();
        path          = mkdtemp(t.data());
    }
    ~temp_dir() { fs::remove_all(path); }
    temp_dir(const temp_dir &)            = delete;
    temp_dir &operator=(const temp_dir &) = delete;
    fs::path  path;
};

bool mentions(const std::vector<std::string> &lines, const std::string &part) {
    for (const auto &l : lines) {
        if (l.find(part) != std::string::npos) {
            return true;
        }
    }
    return false;
}

} // namespace

TEST(lora_catalog, lists_files_and_single_file_folders_and_says_why_others_are_skipped) {
    temp_dir root;
    temp_dir outside;
    fs::path dir = root.path / "loras";
    fs::create_directories(dir / "folder-one");
    fs::create_directories(dir / "two-files");
    write_file(dir / "alpha.gguf", adapter());
    write_file(dir / "folder-one" / "weights.gguf", adapter());
    write_file(dir / "two-files" / "a.gguf", adapter());
    write_file(dir / "two-files" / "b.gguf", adapter());
    write_file(dir / "README.md", "not an adapter");
    write_file(dir / "junk.gguf", "GGUF");
    write_file(dir / "model.gguf", gguf_with({{"general.architecture", "llama"}, {"general.type", "model"}}));
    write_file(dir / "other-arch.gguf", adapter("qwen2"));
    write_file(dir / "bad name.gguf", adapter());
    write_file(outside.path / "x.gguf", adapter());
    fs::create_symlink(outside.path / "x.gguf", dir / "escape.gguf");

    lora_catalog c(dir, "llama");
    EXPECT_TRUE(c.list().empty()); // nothing until the first scan
    const auto skipped = c.rescan();
    const auto list    = c.list();
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0].name, "alpha");
    EXPECT_EQ(list[1].name, "folder-one");
    EXPECT_EQ(list[1].path, dir / "folder-one" / "weights.gguf");
    EXPECT_GT(list[0].file_size, 0u);
    EXPECT_EQ(list[0].n_params, 16u);
    EXPECT_TRUE(mentions(skipped, "two-files: an adapter folder must hold exactly one .gguf file, it holds 2"));
    EXPECT_TRUE(mentions(skipped, "junk"));
    EXPECT_TRUE(mentions(skipped, "model: not a LoRA adapter (general.type 'model'"));
    EXPECT_TRUE(mentions(skipped, "other-arch: an adapter for architecture 'qwen2', the base model is 'llama'"));
    EXPECT_TRUE(mentions(skipped, "bad name: not a valid adapter name"));
    EXPECT_TRUE(mentions(skipped, "escape: resolves outside the adapter folder"));
    EXPECT_EQ(skipped.size(), 6u);
    for (const auto &s : skipped) {
        EXPECT_EQ(s.find(root.path.string()), std::string::npos) << "a skip reason shows the absolute path: " << s;
    }
}

TEST(lora_catalog, an_unknown_name_rescans_at_most_once_per_interval) {
    temp_dir     dir;
    lora_catalog c(dir.path, "llama");
    c.rescan();
    EXPECT_FALSE(c.find("late").has_value());
    write_file(dir.path / "late.gguf", adapter());
    EXPECT_FALSE(c.find("late").has_value()); // the last scan was just now
    std::this_thread::sleep_for(lora_catalog::min_rescan_interval + std::chrono::milliseconds(50));
    auto e = c.find("late");
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->path, dir.path / "late.gguf");
}

TEST(lora_catalog, names_cannot_leave_the_folder) {
    for (const char *bad : {"", ".", "..", "../x", "a/b", "/etc/passwd", ".hidden", "a\\b", "x y"}) {
        EXPECT_FALSE(lora_catalog::valid_name(bad)) << bad;
    }
    for (const char *good : {"tom", "tom-max_r64.v2", "A1"}) {
        EXPECT_TRUE(lora_catalog::valid_name(good)) << good;
    }
    EXPECT_FALSE(lora_catalog::valid_name(std::string(129, 'a')));
    temp_dir     dir;
    lora_catalog c(dir.path, "llama");
    c.rescan();
    EXPECT_FALSE(c.find("../../etc/passwd").has_value());
}
