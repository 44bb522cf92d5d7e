#include "common/mapped_pages.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

namespace inferbox {

namespace {

// One line of /proc/self/maps: "start-end perms offset major:minor inode path".
struct mapping {
    uintptr_t start    = 0;
    uintptr_t end      = 0;
    uint64_t  offset   = 0; // of `start` in the file
    bool      readonly = false;
    unsigned  major    = 0;
    unsigned  minor    = 0;
    uint64_t  inode    = 0;
};

bool parse_mapping(const std::string &line, mapping &m) {
    char               perms[5] = {};
    unsigned long long start = 0, end = 0, offset = 0, inode = 0;
    unsigned           major = 0, minor = 0;
    // The path (possibly with spaces, or absent) is not needed: device and inode identify the file.
    if (std::sscanf(line.c_str(), "%llx-%llx %4s %llx %x:%x %llu", &start, &end, perms, &offset, &major, &minor,
                    &inode) != 7) {
        return false;
    }
    m.start    = static_cast<uintptr_t>(start);
    m.end      = static_cast<uintptr_t>(end);
    m.offset   = offset;
    m.readonly = perms[0] == 'r' && perms[1] == '-';
    m.major    = major;
    m.minor    = minor;
    m.inode    = inode;
    return m.end > m.start;
}

} // namespace

released_pages release_mapped_file_pages(const std::string &path, const std::vector<file_range> &ranges) {
    released_pages out;
    struct stat    st {};
    if (::stat(path.c_str(), &st) != 0) {
        out.error = errno;
        return out;
    }
    std::ifstream maps("/proc/self/maps");
    if (!maps) {
        out.error = ENOENT;
        return out;
    }
    const long     page_size = ::sysconf(_SC_PAGESIZE);
    const uint64_t page      = page_size > 0 ? static_cast<uint64_t>(page_size) : 4096;
    // Read every line first: advising changes no mapping, but the file is read while it is open.
    std::vector<mapping> mine;
    for (std::string line; std::getline(maps, line);) {
        mapping m;
        if (parse_mapping(line, m) && m.readonly && m.inode == static_cast<uint64_t>(st.st_ino) &&
            m.major == ::major(st.st_dev) && m.minor == ::minor(st.st_dev)) {
            mine.push_back(m);
        }
    }
    for (const mapping &m : mine) {
        const uint64_t map_first = m.offset;
        const uint64_t map_last  = m.offset + (m.end - m.start); // one past
        bool           used      = false;
        for (const file_range &r : ranges) {
            if (r.length == 0 || r.offset > UINT64_MAX - r.length) {
                continue;
            }
            // Inside both the range and the mapping, then whole pages only (the mapping's
            // offset is page-aligned, so file and address alignment agree).
            uint64_t first = std::max(r.offset, map_first);
            uint64_t last  = std::min(r.offset + r.length, map_last);
            first          = (first + page - 1) / page * page;
            last           = last / page * page;
            if (last <= first) {
                continue;
            }
            // /proc/self/maps gives addresses as numbers; this is where one becomes a pointer.
            auto *addr = reinterpret_cast<void *>(m.start + (first - map_first)); // NOLINT(performance-no-int-to-ptr)
            if (::madvise(addr, last - first, MADV_DONTNEED) != 0) {
                if (out.error == 0) {
                    out.error = errno;
                }
                continue;
            }
            out.bytes += last - first;
            used = true;
        }
        out.mappings += used ? 1 : 0;
    }
    return out;
}

} // namespace inferbox
