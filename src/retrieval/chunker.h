#pragma once
// Splitting a document's text into overlapping chunks for retrieval (OpenAI's "static" chunking
// strategy: at most `max_tokens` per chunk, `overlap_tokens` shared with the previous one).
//
// This layer has no tokenizer: the caller passes a counting function (a model's tokenizer, or
// anything else), and the default approximates tokens from words (approximate_tokens). The text
// is cut into units — a word with the whitespace after it — each counted once; a chunk's count is
// the sum of its units' counts. Cuts fall on a paragraph break when one lies in the second half of
// a full chunk, else on a sentence or line end there, else between words; a single word longer
// than a chunk is cut between characters. A UTF-8 sequence is never split: every chunk is valid
// UTF-8 and points back into the text by byte offset.

#include "common/status.h"

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace inferbox::retrieval {

// Tokens in a piece of text. Called once per unit (a word and its trailing whitespace) and a few
// times more per word that has to be cut; it must not throw and should be cheap.
using token_counter = std::function<size_t(std::string_view)>;

// The default counter: one token per whitespace-separated word, plus one per further 6 bytes of a
// long word (so URLs, numbers and runs of CJK text, which have no spaces, count more than one).
// English prose comes out near OpenAI's rule of thumb (a token is about three quarters of a word).
size_t approximate_tokens(std::string_view text);

struct chunking_options {
    size_t        max_tokens     = 800; // OpenAI's default; 1..65536
    size_t        overlap_tokens = 400; // at most max_tokens / 2, as OpenAI requires
    token_counter count_tokens;         // empty: approximate_tokens
    size_t        max_document_bytes = 32u << 20;
    size_t        max_chunks         = 20000; // per document
};

struct text_chunk {
    size_t      offset   = 0; // byte offset of `text` in the document
    size_t      n_tokens = 0; // as the counter counted it
    std::string text;         // no leading or trailing whitespace
};

// Chunks `text`, which must be valid UTF-8 (an error names the first invalid byte's offset; the
// caller may pass it through utf8_sanitize first). A text of whitespace only has no chunks.
// Errors: options out of range, the text over max_document_bytes, more chunks than max_chunks —
// each message names the limit.
result<std::vector<text_chunk>> chunk_text(std::string_view text, const chunking_options &opts);

} // namespace inferbox::retrieval
