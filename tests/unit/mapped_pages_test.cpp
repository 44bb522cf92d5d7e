// Handing back mapped file pages (common/mapped_pages.h): only whole pages inside the ranges, only
// read-only mappings of that file, the resident size drops, and the data reads back unchanged.
#include "common/mapped_pages.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

using namespace inferbox;

namespace {

constexpr size_t pages = 64;

size_t page_size() {
    return static_cast<size_t>(::sysconf(_SC_PAGESIZE));
}

// A temporary file of `pages` pages, byte i holding i * 7 mod 251, removed with the fixture.
class mapped_file : public ::testing::Test {
  protected:
    void SetUp() override {
        char name[] = "/tmp/inferbox-mapped-pages-XXXXXX";
        fd_         = ::mkstemp(name);
        ASSERT_GE(fd_, 0);
        path_ = name;
        bytes_.resize(pages * page_size());
        for (size_t i = 0; i < bytes_.size(); ++i) {
            bytes_[i] = static_cast<char>(i * 7 % 251);
        }
        ASSERT_EQ(::write(fd_, bytes_.data(), bytes_.size()), static_cast<ssize_t>(bytes_.size()));
    }
    void TearDown() override {
        if (fd_ >= 0) {
            ::close(fd_);
        }
        std::remove(path_.c_str());
    }

    // Maps the whole file and reads every page, so all of them are resident.
    char *map(int prot, int flags) {
        void *p = ::mmap(nullptr, bytes_.size(), prot, flags, fd_, 0);
        EXPECT_NE(p, MAP_FAILED);
        volatile char sum = 0;
        for (size_t i = 0; i < bytes_.size(); i += page_size()) {
            sum = static_cast<char>(sum + static_cast<const char *>(p)[i]);
        }
        return static_cast<char *>(p);
    }

    int               fd_ = -1;
    std::string       path_;
    std::vector<char> bytes_;
};

// The resident KiB of the mapping that starts at `addr`, from /proc/self/smaps.
long resident_kib(const void *addr) {
    std::ifstream smaps("/proc/self/smaps");
    char          start[32];
    std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(addr));
    bool in_mapping = false;
    for (std::string line; std::getline(smaps, line);) {
        if (line.find('-') != std::string::npos && line.find(' ') != std::string::npos &&
            line.find(':') > line.find(' ')) {
            in_mapping = line.rfind(start, 0) == 0;
        } else if (in_mapping && line.rfind("Rss:", 0) == 0) {
            return std::strtol(line.c_str() + 4, nullptr, 10);
        }
    }
    return -1;
}

TEST_F(mapped_file, whole_pages_inside_the_ranges_are_released_and_read_back_unchanged) {
    char      *p    = map(PROT_READ, MAP_SHARED);
    const auto page = page_size();
    ASSERT_EQ(resident_kib(p), static_cast<long>(pages * page / 1024));

    // Pages 11..29 lie wholly inside the first range (10 pages + 100 bytes to 30 pages + 5), pages
    // 40..41 inside the second; the partial pages at the ends stay.
    const std::vector<file_range> ranges = {{10 * page + 100, 20 * page - 95}, {40 * page, 2 * page}};
    const released_pages          r      = release_mapped_file_pages(path_, ranges);
    EXPECT_EQ(r.error, 0);
    EXPECT_EQ(r.mappings, 1u);
    EXPECT_EQ(r.bytes, (19 + 2) * page);
    EXPECT_EQ(resident_kib(p), static_cast<long>((pages - 21) * page / 1024));

    for (size_t i = 0; i < bytes_.size(); ++i) { // faulted back in from the page cache
        ASSERT_EQ(p[i], bytes_[i]) << "byte " << i;
    }
    ::munmap(p, bytes_.size());
}

TEST_F(mapped_file, writable_mappings_other_files_and_empty_ranges_are_left_alone) {
    char *p                = map(PROT_READ | PROT_WRITE, MAP_PRIVATE);
    p[0]                   = 'x'; // a private change that releasing would lose
    const released_pages r = release_mapped_file_pages(path_, {{0, pages * page_size()}});
    EXPECT_EQ(r.bytes, 0u);
    EXPECT_EQ(r.mappings, 0u);
    EXPECT_EQ(p[0], 'x');
    ::munmap(p, bytes_.size());

    char *q = map(PROT_READ, MAP_SHARED);
    EXPECT_EQ(release_mapped_file_pages(path_, {{0, 0}, {5, page_size() - 10}}).bytes, 0u); // no whole page
    EXPECT_EQ(release_mapped_file_pages(path_, {{UINT64_MAX - 1, 4}}).bytes, 0u);           // wraps: ignored
    ::munmap(q, bytes_.size());

    const released_pages missing = release_mapped_file_pages(path_ + "-absent", {{0, page_size()}});
    EXPECT_EQ(missing.error, ENOENT);
    EXPECT_EQ(missing.bytes, 0u);
}

} // namespace
