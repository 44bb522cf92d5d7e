// The Files API's store (files/file_store.h): bytes and metadata per owner, listing order and
// pages, the three limits with errors naming them, restarts, and the repair of what a crash
// leaves; and text extraction (files/extract.h) for text, Markdown, HTML and PDF.
#include "files/extract.h"
#include "files/file_store.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <string>
#include <vector>

using namespace inferbox;

namespace {

class FileStore : public ::testing::Test { // NOLINT(readability-identifier-naming)
  protected:
    void SetUp() override {
        dir_ =
            std::filesystem::temp_directory_path() / ("inferbox-files-test-" + std::to_string(std::random_device{}()));
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    std::unique_ptr<file_store> open(file_limits limits = {}) {
        auto s = file_store::open(dir_ / "files", limits);
        EXPECT_TRUE(s.ok()) << s.err().message;
        return s.ok() ? std::move(*s) : nullptr;
    }
    static file_record put(file_store &s, const std::string &owner, const std::string &name, const std::string &bytes,
                           const std::string &purpose = "assistants") {
        auto r = s.put(owner, name, purpose, bytes);
        EXPECT_TRUE(r.ok()) << r.err().message;
        return r.ok() ? *r : file_record{};
    }
    static std::vector<std::string> ids(const file_page &page) {
        std::vector<std::string> out;
        for (const auto &f : page.data) {
            out.push_back(f.id);
        }
        return out;
    }
    size_t blob_count() const {
        size_t n = 0;
        for (const auto &e : std::filesystem::directory_iterator(dir_ / "files" / "blobs")) {
            (void)e;
            ++n;
        }
        return n;
    }

    std::filesystem::path dir_;
};

// A PDF with one page per entry, each showing its text in Helvetica, with a correct xref table.
std::string make_pdf(const std::vector<std::string> &pages) {
    std::vector<std::string> objects;
    std::string              kids;
    const size_t             n = pages.size();
    objects.push_back("<< /Type /Catalog /Pages 2 0 R >>");
    for (size_t i = 0; i < n; ++i) {
        kids += std::to_string(4 + 2 * i) + " 0 R ";
    }
    objects.push_back("<< /Type /Pages /Kids [" + kids + "] /Count " + std::to_string(n) + " >>");
    objects.push_back("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>");
    for (size_t i = 0; i < n; ++i) {
        objects.push_back("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 400 144] /Contents " +
                          std::to_string(5 + 2 * i) + " 0 R /Resources << /Font << /F1 3 0 R >> >> >>");
        const std::string content = "BT /F1 18 Tf 20 100 Td (" + pages[i] + ") Tj ET";
        objects.push_back("<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content + "\nendstream");
    }
    std::string         pdf = "%PDF-1.4\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < objects.size(); ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objects[i] + "\nendobj\n";
    }
    const size_t xref = pdf.size();
    pdf += "xref\n0 " + std::to_string(objects.size() + 1) + "\n0000000000 65535 f \n";
    for (size_t off : offsets) {
        std::string num = std::to_string(off);
        pdf += std::string(10 - num.size(), '0') + num + " 00000 n \n";
    }
    pdf += "trailer\n<< /Size " + std::to_string(objects.size() + 1) + " /Root 1 0 R >>\nstartxref\n" +
           std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}

} // namespace

TEST_F(FileStore, put_get_content_delete_per_owner_and_across_restarts) {
    std::string       id;
    const std::string bytes("binary \0\xff and text\n", 19);
    {
        auto s = open();
        ASSERT_TRUE(s);
        const auto f = put(*s, "alice", "notes.bin", bytes, "user_data");
        id           = f.id;
        EXPECT_EQ(id.rfind("file-", 0), 0u);
        EXPECT_EQ(id.size(), 29u);
        EXPECT_EQ(f.bytes, 19);
        EXPECT_GT(f.created_at, 1700000000);
        auto got = s->get("alice", id);
        ASSERT_TRUE(got);
        EXPECT_EQ(got->filename, "notes.bin");
        EXPECT_EQ(got->purpose, "user_data");
        auto content = s->content("alice", id);
        ASSERT_TRUE(content.ok());
        EXPECT_EQ(*content, bytes);
        // Another key never sees, reads, lists or deletes it.
        EXPECT_FALSE(s->get("bob", id));
        EXPECT_EQ(s->content("bob", id).err().kind, error_kind::not_found);
        EXPECT_TRUE(s->list("bob", "", 100, false, "")->data.empty());
        EXPECT_FALSE(s->remove("bob", id));
        EXPECT_FALSE(s->get("", id)); // nor does the keyless owner
    }
    auto again = open(); // a restart keeps the bytes and the metadata
    ASSERT_TRUE(again);
    ASSERT_TRUE(again->get("alice", id));
    EXPECT_EQ(*again->content("alice", id), bytes);
    EXPECT_TRUE(again->remove("alice", id));
    EXPECT_FALSE(again->get("alice", id));
    EXPECT_EQ(again->content("alice", id).err().code, "file_not_found");
    EXPECT_FALSE(again->remove("alice", id));
    EXPECT_EQ(blob_count(), 0u);
}

TEST_F(FileStore, lists_in_order_with_pages_and_a_purpose_filter) {
    auto s = open();
    ASSERT_TRUE(s);
    std::vector<std::string> made;
    made.reserve(5);
    for (int i = 0; i < 5; ++i) {
        made.push_back(put(*s, "alice", "f" + std::to_string(i) + ".txt", "x", i % 2 == 0 ? "assistants" : "batch").id);
    }
    put(*s, "bob", "other.txt", "y");

    auto newest = s->list("alice", "", 2, false, "");
    ASSERT_TRUE(newest.ok());
    EXPECT_EQ(ids(*newest), (std::vector<std::string>{made[4], made[3]}));
    EXPECT_TRUE(newest->has_more);
    auto next = s->list("alice", "", 2, false, made[3]);
    EXPECT_EQ(ids(*next), (std::vector<std::string>{made[2], made[1]}));
    auto last = s->list("alice", "", 2, false, made[1]);
    EXPECT_EQ(ids(*last), (std::vector<std::string>{made[0]}));
    EXPECT_FALSE(last->has_more);

    auto oldest = s->list("alice", "", 10, true, "");
    EXPECT_EQ(ids(*oldest), made);
    EXPECT_FALSE(oldest->has_more);
    EXPECT_EQ(ids(*s->list("alice", "", 10, true, made[2])), (std::vector<std::string>{made[3], made[4]}));
    EXPECT_EQ(ids(*s->list("alice", "batch", 10, true, "")), (std::vector<std::string>{made[1], made[3]}));

    auto unknown = s->list("alice", "", 10, true, "file-nope");
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.err().param, "after");
    EXPECT_FALSE(s->list("bob", "", 10, true, made[0]).ok()); // another key's id is no cursor
}

TEST_F(FileStore, refuses_files_over_each_limit_naming_it) {
    file_limits lim;
    lim.max_file_bytes      = 10;
    lim.max_files_per_owner = 2;
    lim.max_total_bytes     = 25;
    auto s                  = open(lim);
    ASSERT_TRUE(s);

    auto big = s->put("alice", "a.txt", "assistants", std::string(11, 'x'));
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().kind, error_kind::payload_too_large);
    EXPECT_EQ(big.err().code, "file_too_large");
    EXPECT_NE(big.err().message.find("the limit is 10 bytes (--files-max-bytes)"), std::string::npos);

    put(*s, "alice", "a.txt", std::string(10, 'a'));
    put(*s, "alice", "b.txt", std::string(10, 'b'));
    auto third = s->put("alice", "c.txt", "assistants", "c");
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.err().code, "too_many_files");
    EXPECT_NE(third.err().message.find("(2, --files-max-count)"), std::string::npos);

    auto full = s->put("bob", "d.txt", "assistants", std::string(6, 'd')); // 20 + 6 > 25
    ASSERT_FALSE(full.ok());
    EXPECT_EQ(full.err().kind, error_kind::payload_too_large);
    EXPECT_EQ(full.err().code, "storage_full");
    EXPECT_NE(full.err().message.find("exceed 25 bytes in all (the limit, --files-max-total-bytes)"),
              std::string::npos);
    put(*s, "bob", "e.txt", std::string(5, 'e')); // 25: exactly the limit
    EXPECT_EQ(blob_count(), 3u);                  // refused files leave nothing behind
}

TEST_F(FileStore, opening_repairs_what_a_crash_left) {
    std::string kept, lost;
    {
        auto s = open();
        ASSERT_TRUE(s);
        kept = put(*s, "alice", "k.txt", "keep").id;
        lost = put(*s, "alice", "l.txt", "lose").id;
    }
    const auto blobs = dir_ / "files" / "blobs";
    std::filesystem::remove(blobs / lost);                         // metadata without bytes
    std::ofstream(blobs / "file-000000000000000000000000") << "x"; // bytes without metadata
    std::ofstream(blobs / ".tmp-file-1") << "half";                // an upload cut short
    auto s = open();
    ASSERT_TRUE(s);
    EXPECT_TRUE(s->get("alice", kept));
    EXPECT_FALSE(s->get("alice", lost));
    EXPECT_EQ(ids(*s->list("alice", "", 10, true, "")), (std::vector<std::string>{kept}));
    EXPECT_EQ(blob_count(), 1u);
    EXPECT_EQ(*s->content("alice", kept), "keep");
}

TEST(ExtractText, text_and_markdown_as_they_are) {
    EXPECT_EQ(*extract_text("# Title\n\nSome *text*.\n", "README.md", 100), "# Title\n\nSome *text*.\n");
    EXPECT_EQ(*extract_text("\xEF\xBB\xBFwith a BOM", "a.TXT", 100), "with a BOM");
    EXPECT_EQ(*extract_text("a,b\n1,2\n", "t.csv", 100), "a,b\n1,2\n");
    auto bad = extract_text("caf\xe9", "a.txt", 100);
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.err().code, "invalid_utf8");
    auto big = extract_text(std::string(101, 'x'), "a.txt", 100);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().code, "text_too_large");
    EXPECT_NE(big.err().message.find("more than 100 bytes"), std::string::npos);
    auto unknown = extract_text("x", "image.png", 100);
    ASSERT_FALSE(unknown.ok());
    EXPECT_EQ(unknown.err().code, "unsupported_file_type");
    EXPECT_FALSE(extract_text("x", "no_extension", 100).ok());
    EXPECT_EQ(file_text_kind_of("dir.pdf/readme"), file_text_kind::unsupported);
}

TEST(ExtractText, html_without_markup_scripts_and_styles) {
    const std::string page =
        "<!DOCTYPE html><html><head><title>The title</title><style>p { color: red }</style>"
        "<script>if (a < b && c > d) { document.write('<p>no</p>') }</script></head>\n"
        "<body><!-- a comment <p>hidden</p> --><h1>Heading</h1><p>Fish &amp; chips &lt;3 &#x263A; &#65;&#66;"
        "&nbsp;and&eacute;&bogus; &amp</p>\n<ul><li>one</li><li>two</li></ul>"
        "<p><a href=\"x>y\" title='q'>link</a>   spaced\n\tout</p><SCRIPT>hidden()</SCRIPT >"
        "<table><tr><td>c1</td><td>c2</td></tr></table>caf\xc3\xa9</body></html>";
    auto text = extract_text(page, "page.html", 1000);
    ASSERT_TRUE(text.ok()) << text.err().message;
    EXPECT_EQ(*text, "The title\n\nHeading\n\nFish & chips <3 \xe2\x98\xba AB and&eacute;&bogus; &amp\n\none\n\ntwo\n\n"
                     "link spaced out\n\nc1 c2\n\ncaf\xc3\xa9");
    EXPECT_FALSE(extract_text("<p>caf\xe9</p>", "a.htm", 100).ok());
    auto big = html_text("<p>" + std::string(200, 'x') + "</p>", 100);
    ASSERT_FALSE(big.ok());
    EXPECT_EQ(big.err().code, "text_too_large");
    EXPECT_EQ(*html_text("<script>never closed", 100), "");
    EXPECT_EQ(*html_text("a <b unclosed", 100), "a");
}

TEST(ExtractText, pdf_pages_through_poppler) {
    const auto one  = make_pdf({"Hello from inferbox"});
    auto       text = extract_text(one, "doc.pdf", 1000);
    ASSERT_TRUE(text.ok()) << text.err().message;
    EXPECT_NE(text->find("Hello from inferbox"), std::string::npos) << *text;

    auto two = extract_text(make_pdf({"First page", "Second page"}), "Two.PDF", 1000);
    ASSERT_TRUE(two.ok()) << two.err().message;
    const auto ff = two->find('\f');
    ASSERT_NE(ff, std::string::npos) << *two;
    EXPECT_NE(two->substr(0, ff).find("First page"), std::string::npos);
    EXPECT_NE(two->substr(ff).find("Second page"), std::string::npos);

    auto small = extract_text(one, "doc.pdf", 5);
    ASSERT_FALSE(small.ok());
    EXPECT_EQ(small.err().code, "text_too_large");
    auto garbage = extract_text("%PDF-1.4 this is not a PDF", "doc.pdf", 1000);
    ASSERT_FALSE(garbage.ok());
    EXPECT_EQ(garbage.err().code, "invalid_pdf");
    EXPECT_EQ(extract_text("", "empty.pdf", 1000).err().code, "invalid_pdf");
}
