#include "agent/extract.h"

#include "common/waker.h"

#include <algorithm>
#include <utility>

namespace inferbox {

using json = nlohmann::json;

result<std::string> extraction_input(const std::string &text, const std::vector<std::string> &file_ids,
                                     const file_text_source &files, size_t max_bytes) {
    if (text.empty() && file_ids.empty()) {
        return error::invalid("the arguments give neither text nor file_ids: there is nothing to extract from", "text");
    }
    if (file_ids.size() > max_extract_files) {
        return error::invalid("file_ids names " + std::to_string(file_ids.size()) + " files; the limit is " +
                                  std::to_string(max_extract_files),
                              "file_ids");
    }
    const auto too_long = [max_bytes](const std::string &what, size_t n) {
        return what + " brings the input to " + std::to_string(n) + " bytes; an extraction takes at most " +
               std::to_string(max_bytes) + " bytes of text and files together";
    };
    if (text.size() > max_bytes) {
        return error::invalid(too_long("text", text.size()), "text");
    }
    std::string input = text;
    for (size_t i = 0; i < file_ids.size(); ++i) {
        const std::string param = "file_ids[" + std::to_string(i) + "]";
        const auto       &id    = file_ids[i];
        if (std::find(file_ids.begin(), file_ids.begin() + static_cast<std::ptrdiff_t>(i), id) !=
            file_ids.begin() + static_cast<std::ptrdiff_t>(i)) {
            return error::invalid(param + ": the file '" + id + "' is named twice", param);
        }
        if (!files) {
            return error::invalid(param + ": files cannot be read on this server (the Files API is off)", param);
        }
        const std::string header = std::string(input.empty() ? "" : "\n\n") + "File ";
        const size_t      used   = input.size() + header.size();
        if (used >= max_bytes) {
            return error::invalid(param + ": the file '" + id + "' does not fit: " + too_long("what precedes it", used),
                                  param);
        }
        auto f = files(id, max_bytes - used);
        if (!f) {
            auto err    = f.err();
            err.message = param + ": the file '" + id + "': " + err.message;
            err.param   = param;
            return err;
        }
        std::string block = header + f->filename + " (" + id + "):\n" + f->text;
        if (input.size() + block.size() > max_bytes) {
            return error::invalid(param + ": the file '" + id + "' (" + f->filename + ", " +
                                      std::to_string(f->text.size()) + " bytes of text) " +
                                      too_long("does not fit: it", input.size() + block.size()),
                                  param);
        }
        input += block;
    }
    return input;
}

api_request structured_request(const std::string &model, const std::string &instructions, const std::string &input,
                               const std::string &schema, const std::string &schema_param, int32_t max_tokens,
                               float temperature) {
    api_request req;
    req.kind   = api_kind::chat;
    req.model  = model;
    req.stream = true;
    if (!instructions.empty()) {
        req.messages.push_back({"system", instructions, {}, ""});
    }
    req.messages.push_back({"user", input, {}, ""});
    req.sampling.temperature = temperature;
    req.max_tokens           = max_tokens;
    req.constraint.kind      = constraint_kind::json_schema;
    req.constraint.param     = schema_param;
    req.constraint.schema    = schema;
    return req;
}

generation_outcome run_generation(generation_backend &be, api_request req, cancel_signal &cancel,
                                  std::chrono::steady_clock::time_point deadline) {
    generation_outcome out;
    const auto         fail = [&out](std::string why, const char *outcome) {
        out.error   = std::move(why);
        out.outcome = outcome;
        return out;
    };
    if (cancel.cancelled()) {
        return fail("the request was cancelled", "cancelled");
    }
    auto                               wake = std::make_shared<waker>();
    std::shared_ptr<generation_stream> stream;
    try {
        auto prepared = be.prepare(std::move(req));
        if (!prepared) {
            return fail(prepared.err().message, "error");
        }
        auto s = be.submit(std::make_shared<const backend_request>(std::move(*prepared)), [wake] { wake->notify(); });
        if (!s) {
            return fail(s.err().message, "error");
        }
        stream = std::move(*s);
    } catch (const std::exception &e) {
        return fail(std::string("the generation failed: ") + e.what(), "error");
    }
    // The hook lives in the signal, which outlives this call: unsubscribed below.
    const auto  hook = cancel.subscribe([stream, wake] {
        stream->cancel();
        wake->notify();
    });
    std::string text;
    for (bool done = false; !done;) {
        for (auto &ev : stream->take()) {
            if (ev.err) {
                fail(ev.err->message, "error");
                done = true;
                break;
            }
            text += ev.content;
            if (ev.finish == finish_reason::none) {
                continue;
            }
            out.route       = stream->route();
            out.text        = ev.message ? ev.message->content : text;
            out.n_prompt    = ev.n_prompt;
            out.n_generated = ev.n_generated;
            if (ev.finish == finish_reason::length) {
                out.incomplete_reason = ev.incomplete_reason.empty() ? "max_output_tokens" : ev.incomplete_reason;
                out.outcome           = "budget";
                out.error             = "the generation stopped at its token budget before its answer was complete";
            }
            done = true;
            break;
        }
        if (done) {
            break;
        }
        if (cancel.cancelled()) {
            fail("the request was cancelled", "cancelled");
            break;
        }
        if (!wake->wait(deadline) && std::chrono::steady_clock::now() >= deadline) {
            stream->cancel();
            fail("the generation ran past its time budget", "timeout");
            break;
        }
    }
    cancel.unsubscribe(hook);
    return out;
}

std::optional<error> check_json_answer(const std::string &text) {
    if (!json::accept(text)) {
        return error::invalid("the answer is not JSON (the model's server did not hold it to the schema): " +
                              text.substr(0, 200));
    }
    return std::nullopt;
}

namespace {

constexpr const char *default_instructions =
    "Extract the information the JSON Schema asks for from the user's text and files. Answer with the JSON "
    "only; use only what the text says.";

class extract_tool final : public supervised_tool {
  public:
    extract_tool(extract_spec spec, extract_runtime rt) : spec_(std::move(spec)), rt_(std::move(rt)) {}

    tool_function function() const override {
        json props = {{"text", {{"type", "string"}, {"maxLength", max_extract_text_chars}}}};
        // What the call reads must be there: the text when the tool has no files, else a file.
        json req = json::array({"text"});
        if (!spec_.file_ids.empty()) {
            props["file_ids"] = {{"type", "array"},
                                 {"items", {{"enum", spec_.file_ids}}},
                                 {"minItems", 1},
                                 {"maxItems", std::min(spec_.file_ids.size(), max_extract_files)}};
            req               = json::array({"file_ids"});
        }
        json        params = {{"type", "object"}, {"properties", std::move(props)}, {"required", std::move(req)}};
        std::string about  = spec_.description.empty()
                                 ? "Extracts structured data from text" +
                                      std::string(spec_.file_ids.empty() ? "" : " and the files named") +
                                      " and returns it as JSON under a fixed schema. Pass the text to read."
                                 : spec_.description;
        // The grammar generates properties in the schema's order: text first, then files.
        return {spec_.name, std::move(about), params.dump()};
    }
    std::string kind() const override { return "extract"; }
    std::string server() const override { return spec_.model; }
    std::string item_type() const override { return "extract_call"; }

    outcome run_supervised(const std::string &arguments_json, const tool_call_context &ctx) const override {
        const auto         t0 = std::chrono::steady_clock::now();
        generation_outcome run;
        auto               input = read_input(arguments_json);
        if (!input) {
            run.error   = input.err().message;
            run.outcome = "error";
        } else if (auto be = rt_.resolve ? rt_.resolve(spec_.model)
                                         : result<member_backend>(error::invalid("no backends on this server"));
                   !be) {
            run.error   = "the model '" + spec_.model + "' cannot run this extraction: " + be.err().message;
            run.outcome = "error";
        } else {
            run = run_generation(
                *be->backend,
                structured_request(spec_.model, spec_.instructions.empty() ? default_instructions : spec_.instructions,
                                   *input, spec_.schema, spec_.schema_param, spec_.max_tokens),
                *ctx.cancel, t0 + spec_.max_time);
            if (run.route.backend.empty()) {
                run.route = {be->where, be->where};
            }
            if (run.outcome == "budget") {
                run.error = "the extraction stopped at its max_output_tokens (" + std::to_string(spec_.max_tokens) +
                            ") before its JSON was complete";
            } else if (run.outcome == "timeout") {
                run.error =
                    "the extraction ran past its time budget (" + std::to_string(spec_.max_time.count()) + " ms)";
            } else if (run.outcome == "ok") {
                if (auto bad = check_json_answer(run.text)) {
                    run.error   = bad->message;
                    run.outcome = "error";
                }
            }
        }
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        json         rec     = {{"model", spec_.model},
                                {"backend", run.route.backend.empty() ? json(nullptr) : json(run.route.backend)},
                                {"usage", {{"input_tokens", run.n_prompt}, {"output_tokens", run.n_generated}}},
                                {"duration_ms", static_cast<int64_t>(seconds * 1000.0)}};
        tool_outcome result;
        if (run.error.empty()) {
            result.output = std::move(run.text);
        } else {
            result.error = std::move(run.error);
        }
        return {std::move(result), rec.dump(-1, ' ', false, json::error_handler_t::replace)};
    }

  private:
    // The call's {text?, file_ids?} (the grammar shaped them; checked again, as any input).
    result<std::string> read_input(const std::string &arguments_json) const {
        const json args = json::parse(arguments_json, nullptr, false);
        if (!args.is_object()) {
            return error::invalid("the arguments must be a JSON object {text?, file_ids?}");
        }
        std::string text;
        if (auto it = args.find("text"); it != args.end() && !it->is_null()) {
            if (!it->is_string()) {
                return error::invalid("text must be a string", "text");
            }
            text = it->get<std::string>();
        }
        std::vector<std::string> ids;
        if (auto it = args.find("file_ids"); it != args.end() && !it->is_null()) {
            if (!it->is_array()) {
                return error::invalid("file_ids must be an array of file ids", "file_ids");
            }
            for (size_t i = 0; i < it->size(); ++i) {
                const auto &id = (*it)[i];
                if (!id.is_string() || std::find(spec_.file_ids.begin(), spec_.file_ids.end(), id.get<std::string>()) ==
                                           spec_.file_ids.end()) {
                    return error::invalid("file_ids[" + std::to_string(i) + "] is not one of this tool's files",
                                          "file_ids");
                }
                ids.push_back(id.get<std::string>());
            }
        }
        return extraction_input(text, ids, rt_.files);
    }

    extract_spec    spec_;
    extract_runtime rt_;
};

} // namespace

std::shared_ptr<builtin_tool> make_extract_tool(extract_spec spec, extract_runtime rt) {
    return std::make_shared<extract_tool>(std::move(spec), std::move(rt));
}

json extract_call_item(const server_tool_call &c) {
    const json rec = json::parse(c.server, nullptr, false);
    const bool ok  = c.error.empty();
    return {{"type", c.type},
            {"id", c.id},
            {"status", ok ? "completed" : "failed"},
            {"name", c.name},
            {"model", rec.is_object() ? rec.value("model", std::string()) : c.server},
            {"arguments", c.arguments},
            {"output", ok ? json(c.output) : json(nullptr)},
            {"error", ok ? json(nullptr) : json(c.error)},
            {"usage", rec.is_object() ? rec.value("usage", json(nullptr)) : json(nullptr)},
            {"duration_ms", rec.is_object() ? rec.value("duration_ms", json(nullptr)) : json(nullptr)}};
}

} // namespace inferbox
