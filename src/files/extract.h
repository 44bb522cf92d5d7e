#pragma once
// The text of a stored file, for retrieval (chunking, embedding, full-text search). The type comes
// from the file name's extension:
//   - plain text, Markdown and other text formats (.txt .md .markdown .csv .json .jsonl .yaml
//     .yml .xml .log .rst .tex, and source code: .c .cc .cpp .h .hpp .py .js .ts .java .go .rs
//     .rb .sh .sql .css .php): the bytes as they are, which must be valid UTF-8 (a leading BOM is
//     dropped);
//   - HTML (.html .htm .xhtml): the text without tags, comments, scripts and styles, character
//     references decoded; block elements (p, div, li, h1..h6, tr, br, ...) end lines, other
//     whitespace runs become one space;
//   - PDF (.pdf): each page's text through poppler, pages separated by a form feed (U+000C);
//     an encrypted or unreadable PDF is an error.
// Pure functions of their arguments; thread-safe. Every result is valid UTF-8.

#include "common/status.h"

#include <cstddef>
#include <string>
#include <string_view>

namespace inferbox {

enum class file_text_kind { text, html, pdf, unsupported };

// The kind of a file by its name's extension (case-insensitive).
file_text_kind file_text_kind_of(std::string_view filename);

// The text of a file's bytes by its kind. Errors (invalid_request, with a code): an unsupported
// extension (unsupported_file_type, naming the ones supported), text that is not valid UTF-8
// (invalid_utf8), an unreadable or encrypted PDF (invalid_pdf); more than `max_bytes` of text
// (payload_too_large, text_too_large, naming the limit).
result<std::string> extract_text(std::string_view bytes, std::string_view filename, size_t max_bytes);

// HTML's text as extract_text gives it: the bytes must be valid UTF-8; at most `max_bytes` of text.
// Linear in the input; fuzzed by tests/fuzz/multipart_fuzz.cpp.
result<std::string> html_text(std::string_view html, size_t max_bytes);

} // namespace inferbox
