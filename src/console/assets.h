#pragma once
// The console's files, embedded in the binary at build time (console/build.mjs bundles
// console/src and writes the C++ source that defines console_assets()). Nothing is read from disk
// at run time and nothing comes from a CDN. A build configured with -DINFERBOX_CONSOLE=OFF links
// console/no_assets.cpp instead: the list is empty and the server answers 404 at "/".

#include <string_view>
#include <vector>

namespace inferbox {

struct console_asset {
    std::string_view path;         // "/" for index.html, "/assets/app-1a2b3c4d.js", ...
    std::string_view content_type; // "text/html; charset=utf-8", ...
    std::string_view body;         // the file's bytes
    std::string_view gzip;         // the same bytes, gzipped at build time
    std::string_view etag;         // a strong validator, quotes included
    bool             immutable;    // content-hashed name: cacheable forever
};

// Every embedded file, in a fixed order.
const std::vector<console_asset> &console_assets();

} // namespace inferbox
