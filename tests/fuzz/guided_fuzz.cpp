// Untrusted guided-decoding text -> the model-free converters of api/guided.h: the bytes as a
// guided_regex pattern (regex_to_gbnf), as guided_choice entries (one per line, choice_to_gbnf)
// and as a guided_grammar (gbnf_shape_error). Nothing may throw, crash or hang; an error must
// carry a message; every grammar produced must be within the limits and pass the same shape
// check a client's grammar must pass (so llama.cpp's recursive parser is never exposed to it).

#include "api/guided.h"
#include "common/utf8.h"
#include "fuzz_check.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

using namespace inferbox;

namespace {

void check_grammar(const std::string &g, const guided_limits &limits) {
    FUZZ_CHECK(g.rfind("root ::= ", 0) == 0);
    FUZZ_CHECK(!g.empty() && g.back() == '\n');
    FUZZ_CHECK(g.size() <= limits.max_grammar_bytes);
    FUZZ_CHECK(utf8_valid(g));
    // Generated grammars are ASCII: every other code point is escaped.
    for (const char c : g) {
        FUZZ_CHECK(static_cast<unsigned char>(c) < 0x80);
    }
    FUZZ_CHECK(gbnf_shape_error(g, limits).empty());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    guided_limits          limits;
    limits.max_nesting    = 8; // small bounds, so the fuzzer reaches them
    limits.max_repetition = 50;

    auto regex = regex_to_gbnf(input, limits);
    if (regex.ok()) {
        check_grammar(*regex, limits);
    } else {
        FUZZ_CHECK(regex.err().kind == error_kind::invalid_request && !regex.err().message.empty());
        FUZZ_CHECK(utf8_valid(regex.err().message));
    }

    std::vector<std::string> choices;
    size_t                   start = 0;
    for (size_t i = 0; i <= input.size(); ++i) {
        if (i == input.size() || input[i] == '\n') {
            choices.emplace_back(input.substr(start, i - start));
            start = i + 1;
        }
    }
    auto choice = choice_to_gbnf(choices, limits);
    if (choice.ok()) {
        check_grammar(*choice, limits);
    } else {
        FUZZ_CHECK(!choice.err().message.empty());
    }

    const std::string shape = gbnf_shape_error(input, limits);
    FUZZ_CHECK(utf8_valid(shape));
    return 0;
}
