#pragma once
// Handing back a file's mapped pages that this process no longer reads. llama.cpp maps a model
// file and, where ggml's CPU backend repacks a weight into an interleaved layout, copies it into
// anonymous memory at load: the file pages it read to do so stay mapped, resident and counted
// in the process's RSS (and in its cgroup's memory) for as long as the model is loaded, though
// nothing reads them again. release_mapped_file_pages() drops them from this process's page
// tables (madvise MADV_DONTNEED). The mappings stay valid: a page read again later is faulted
// back in from the page cache, so the call is safe even for a range that is still in use, only
// slower.

#include <cstdint>
#include <string>
#include <vector>

namespace inferbox {

struct file_range {
    uint64_t offset = 0; // bytes from the start of the file
    uint64_t length = 0;
};

struct released_pages {
    uint64_t bytes    = 0; // the whole pages inside the ranges that were advised away
    uint32_t mappings = 0; // this process's read-only mappings of the file that held any of them
    int      error    = 0; // errno of the first failure (reading /proc/self/maps, stat, madvise); 0: none
};

// For every read-only mapping of the file at `path` (matched by device and inode, so a
// different path to the same file counts) in /proc/self/maps, the whole pages that lie inside
// one of `ranges` are released. Partial pages at a range's ends are kept: they may hold the
// neighbouring data. Writable mappings are never touched (their pages may hold changes).
released_pages release_mapped_file_pages(const std::string &path, const std::vector<file_range> &ranges);

} // namespace inferbox
