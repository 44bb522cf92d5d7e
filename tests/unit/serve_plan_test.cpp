// serve's planning without a model or a server: the option checks (each error names its flag and
// rule), the model-argument helpers, and the profile choice on synthetic model headers and
// machines (server/serve_plan.h).

#include "common/micro_batch.h"
#include "server/serve_plan.h"
#include "store/latency_targets.h"
#include "store/profiles.h"
#include "synthetic_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

using namespace inferbox;
using namespace inferbox::synthetic;

namespace {

serve_options with_model() {
    serve_options o;
    o.models = {"model.gguf"};
    return o;
}

std::string refusal(const serve_options &o, const char *env = nullptr) {
    auto s = check_serve_options(o, env);
    return s ? std::string("(accepted)") : s.err().message;
}

} // namespace

TEST(serve_plan, routes_checked_before_anything_loads) {
    auto o   = with_model();
    o.routes = {"tiny=local-first;pull=https://models.example/tiny.gguf", "big=remote-first"};
    auto s   = check_serve_options(o, nullptr);
    ASSERT_TRUE(s) << s.err().message;
    ASSERT_EQ(s->routes.size(), 2U);
    EXPECT_EQ(s->routes[0].pull, "https://models.example/tiny.gguf");
    EXPECT_EQ(s->routes[1].policy, route_policy::remote_first);

    o.routes = {"tiny=local-first;pull=tiny.gguf"};
    EXPECT_EQ(refusal(o), "--route tiny: pull= takes a download reference (hf://ORG/REPO/FILE.gguf or an http(s):// "
                          "URL), got 'tiny.gguf'");
    o.routes = {"tiny=local-first", "tiny=balanced"};
    EXPECT_EQ(refusal(o), "--route: the model 'tiny' has two routes");
    o.routes = {"tiny=nowhere"};
    EXPECT_NE(refusal(o).find("unknown routing policy 'nowhere'"), std::string::npos);
}

TEST(serve_plan, options_refused_with_the_flag_and_its_rule) {
    EXPECT_EQ(refusal(serve_options{}), "no model to serve");

    auto o          = with_model();
    o.memory_budget = "lots";
    EXPECT_EQ(refusal(o),
              "--memory-budget 'lots' is not a size: use auto, off, or a number with a unit (512MiB, 8GiB, 16GB)");

    o          = with_model();
    o.api_keys = {"short"};
    EXPECT_EQ(refusal(o), "an API key is 5 characters long; keys must have at least 8");
    // INFERBOX_API_KEYS counts the same as --api-key.
    EXPECT_EQ(refusal(with_model(), "long-enough-key,tiny"),
              "an API key is 4 characters long; keys must have at least 8");

    o          = with_model();
    o.tls_cert = "cert.pem";
    EXPECT_EQ(refusal(o), "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)");
    o               = with_model();
    o.tls_client_ca = "ca.pem";
    EXPECT_EQ(refusal(o), "TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)");

    o               = with_model();
    o.sql_databases = {"shop=a.db", "shop=b.db"};
    EXPECT_EQ(refusal(o), "--sql-database: the name 'shop' is given twice");
    o               = with_model();
    o.sql_databases = {"no-equals-sign"};
    EXPECT_EQ(refusal(o).rfind("--sql-database: ", 0), 0u) << refusal(o);

    o             = with_model();
    o.mcp_servers = {"fs=stdio:npx a", "fs=stdio:npx b"};
    EXPECT_EQ(refusal(o), "--mcp-server: the name 'fs' is given twice");

    o     = with_model();
    o.rpc = "host-without-port";
    EXPECT_NE(refusal(o).find("host-without-port"), std::string::npos) << refusal(o);

    o                   = with_model();
    o.engine.kv_type    = kv_cache_type::q8_0;
    o.engine.flash_attn = flash_attention::off;
    EXPECT_EQ(refusal(o), "--kv-type q8_0 needs flash attention: llama.cpp cannot quantize the V cache without it "
                          "(use --flash-attn auto or on)");
    o                           = with_model();
    o.embedding.max_inputs      = 100;
    o.embedder.max_queue_inputs = 50;
    EXPECT_EQ(refusal(o), "--embedding-max-inputs (100) must not exceed --embedding-max-queue (50): such a request "
                          "could never be queued");

    o          = with_model();
    o.lora_dir = "/nonexistent/adapters";
    EXPECT_EQ(refusal(o), "--lora-dir /nonexistent/adapters is not a folder");
}

TEST(serve_plan, a_member_schema_the_grammar_converter_refuses_stops_the_start) {
    auto o         = with_model();
    o.teams        = {R"(crew=big;member.a=small;member.a.schema={"$ref": "#/$defs/missing"})"};
    const auto why = refusal(o);
    EXPECT_EQ(why.rfind("--team 'crew': member.a.schema: ", 0), 0u) << why;
    EXPECT_NE(why.find("missing"), std::string::npos) << why;
    o.teams = {
        R"(crew=big;member.a=small;member.a.schema={"type": "object", "properties": {"n": {"type": "integer"}}})"};
    EXPECT_TRUE(check_serve_options(o, nullptr)) << refusal(o);
}

TEST(serve_plan, accepted_options_are_settled) {
    const auto dir = std::filesystem::temp_directory_path() / "inferbox-serve-plan-test";
    std::filesystem::create_directories(dir);
    const auto key_file = dir / "keys";
    std::ofstream(key_file) << "# a comment\nkey-from-the-file\n";

    auto o          = with_model();
    o.memory_budget = "2GiB";
    o.api_keys      = {"key-from-the-flag"};
    o.api_key_file  = key_file.string();
    o.rpc           = "10.0.0.2:50052,10.0.0.3:50052";
    o.sql_databases = {"shop=shop.db", "crm=crm.db"};
    auto s          = check_serve_options(o, "key-from-the-env");
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->budget_bytes, uint64_t{2} << 30);
    EXPECT_EQ(s->api_keys, (std::vector<std::string>{"key-from-the-flag", "key-from-the-file", "key-from-the-env"}));
    ASSERT_EQ(s->rpc.size(), 2u);
    EXPECT_EQ(s->rpc[1].text(), "10.0.0.3:50052");
    ASSERT_EQ(s->sql_databases.size(), 2u);
    EXPECT_EQ(s->sql_databases[1].name, "crm");

    o.memory_budget = "auto";
    s               = check_serve_options(o, nullptr);
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_FALSE(s->budget_bytes); // the profile's budget, settled later
    o.memory_budget = "off";
    s               = check_serve_options(o, nullptr);
    ASSERT_TRUE(s) << s.err().message;
    EXPECT_EQ(s->budget_bytes, 0u);
    std::filesystem::remove_all(dir);
}

TEST(serve_plan, memory_sizes) {
    EXPECT_EQ(parse_memory_size("512MiB"), uint64_t{512} << 20);
    EXPECT_EQ(parse_memory_size("8G"), uint64_t{8} << 30);
    EXPECT_EQ(parse_memory_size("16GB"), uint64_t{16'000'000'000});
    EXPECT_EQ(parse_memory_size("1.5 GiB"), uint64_t{3} << 29);
    EXPECT_EQ(parse_memory_size("off"), 0u);
    EXPECT_FALSE(parse_memory_size("-1GiB"));
    EXPECT_FALSE(parse_memory_size("12 parsecs"));
    EXPECT_FALSE(parse_memory_size("99999999999TB")); // past 2^64
}

TEST(serve_plan, model_arguments_and_paths_in_messages) {
    EXPECT_EQ(split_model_arg("tiny=/models/a.gguf"),
              std::make_pair(std::string("tiny"), std::string("/models/a.gguf")));
    EXPECT_EQ(split_model_arg("/models/a.gguf"), std::make_pair(std::string(), std::string("/models/a.gguf")));
    // An id with characters an id cannot have: the whole argument is the reference.
    EXPECT_EQ(split_model_arg("https://h/x?a=b"), std::make_pair(std::string(), std::string("https://h/x?a=b")));
    EXPECT_EQ(split_model_arg("=x"), std::make_pair(std::string(), std::string("=x")));

    EXPECT_EQ(without_paths("cannot read /srv/models/a.gguf: /srv/models/a.gguf is short", {"/srv/models/a.gguf", ""}),
              "cannot read a.gguf: a.gguf is short");
}

TEST(serve_plan, profile_auto_settles_the_engine_from_the_machine) {
    const gguf_info     model = make_model({});
    const hardware_info hw    = make_hardware();
    serve_options       o     = with_model();
    o.profile                 = "auto";
    engine_config  ecfg;
    model_options  mo;
    chosen_profile out;
    ASSERT_FALSE(choose_profile(o, model, nullptr, hw, ecfg, mo, out));
    EXPECT_GT(out.memory_bytes, 4 * gib); // the weights and more
    EXPECT_LE(out.memory_bytes, out.budget_bytes);
    EXPECT_NE(out.profile_json.find("\"status\":\"runnable\""), std::string::npos) << out.profile_json;
    EXPECT_EQ(out.profiles_json.front(), '[');
    EXPECT_GT(ecfg.parallel, 0);
    EXPECT_GT(ecfg.n_ctx_slot, 0);
}

TEST(serve_plan, the_micro_batch_is_the_cpus_smaller_one_unless_layers_go_to_a_gpu) {
    const gguf_info model = make_model({});
    serve_options   o     = with_model();
    const auto      plan  = [&](int32_t gpu_layers, int32_t step_tokens) {
        engine_config ecfg;
        ecfg.step_tokens = step_tokens;
        model_options mo;
        mo.n_gpu_layers = gpu_layers;
        chosen_profile out;
        const auto     err = choose_profile(o, model, nullptr, make_hardware(), ecfg, mo, out);
        EXPECT_FALSE(err) << err->message;
        return ecfg.micro_batch;
    };
    EXPECT_EQ(plan(0, 2048), cpu_micro_batch_tokens);
    EXPECT_EQ(plan(0, 100), 100); // never above a step
    o.profile = "auto";           // a CPU profile: the same
    EXPECT_EQ(plan(0, 2048), cpu_micro_batch_tokens);
    EXPECT_EQ(micro_batch_for(false, 2048), micro_batch_tokens); // a GPU's, as llama.cpp sizes it
    EXPECT_EQ(micro_batch_for(false, 300), 300);
    EXPECT_EQ(micro_batch_for(true, 0), 1);
}

TEST(serve_plan, profile_named_or_custom_is_refused_with_its_reason) {
    const gguf_info model = make_model({});
    serve_options   o     = with_model();
    engine_config   ecfg;
    model_options   mo;
    chosen_profile  out;

    o.profile = "fastest-ever";
    auto err  = choose_profile(o, model, nullptr, make_hardware(), ecfg, mo, out);
    ASSERT_TRUE(err);
    EXPECT_EQ(err->param, "profile");
    EXPECT_NE(err->message.find("no profile 'fastest-ever' for this model; profiles: "), std::string::npos)
        << err->message;

    // Explicit flags: weights that cannot fit at all, and a KV cache too big beside them (the
    // numbers, and what to try).
    o.profile = "";
    err       = choose_profile(o, model, nullptr, make_hardware(1 * gib, 2 * gib), ecfg, mo, out);
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("this configuration cannot run here: the weights alone (4.0 GiB) exceed"),
              std::string::npos)
        << err->message;
    ecfg.parallel   = 16;
    ecfg.n_ctx_slot = 8192; // 1 GiB of f16 KV per slot
    err             = choose_profile(o, model, nullptr, make_hardware(8 * gib, 16 * gib), ecfg, mo, out);
    ASSERT_TRUE(err);
    EXPECT_NE(err->message.find("this configuration needs about "), std::string::npos) << err->message;
    EXPECT_NE(err->message.find("inferbox profiles --model lists what fits"), std::string::npos) << err->message;
}

TEST(serve_plan, models_are_planned_in_order_and_a_bad_file_is_refused_not_fatal) {
    registry metrics;
    auto     o = with_model();
    auto     p = plan_models(o, {{"first", "/nonexistent/a.gguf"}, {"second", "/nonexistent/b.gguf"}}, nullptr,
                             make_hardware(), metrics);
    ASSERT_EQ(p.plans.size(), 2u);
    EXPECT_EQ(p.plans[0].id, "first");
    EXPECT_EQ(p.plans[1].path, "/nonexistent/b.gguf");
    ASSERT_TRUE(p.plans[1].refused);
    EXPECT_NE(p.plans[1].refused->message.find("b.gguf"), std::string::npos) << p.plans[1].refused->message;
    EXPECT_TRUE(p.plans[0].info.metrics); // its series exist before it loads
}

TEST(serve_plan, latency_targets_come_from_the_flags_else_the_profile) {
    const gguf_info model = make_model({});
    hardware_info   hw    = make_hardware();
    serve_options   o     = with_model();
    const auto      plan  = [&](engine_config &ecfg, chosen_profile &out) {
        model_options mo;
        ecfg = o.engine;
        return choose_profile(o, model, nullptr, hw, ecfg, mo, out);
    };
    o.engine.n_threads = 16; // as measured below
    engine_config  ecfg;
    chosen_profile out;

    // No flags: the custom profile's defaults, from the fallback bandwidth (no measurement).
    ASSERT_FALSE(plan(ecfg, out));
    profile_settings s;
    s.parallel          = o.engine.parallel;
    s.n_threads         = 16;
    const auto fallback = profile_latency_defaults(model, s, nullptr);
    ASSERT_GT(fallback.itl_ms, 0);
    EXPECT_EQ(ecfg.slo_ttft_ms, fallback.ttft_ms);
    EXPECT_EQ(ecfg.slo_itl_ms, fallback.itl_ms);
    EXPECT_NE(out.profile_json.find("\"ttft_source\":\"profile\""), std::string::npos) << out.profile_json;
    EXPECT_NE(out.profile_json.find("\"itl_source\":\"profile\""), std::string::npos) << out.profile_json;
    EXPECT_NE(out.profile_json.find("\"basis\":\"fallback\""), std::string::npos) << out.profile_json;
    // Every candidate lists its own defaults (/v1/manifest).
    EXPECT_NE(out.profiles_json.find("\"latency_targets\":{"), std::string::npos) << out.profiles_json;

    // A measured machine: the defaults follow the measurement (a faster machine, tighter targets).
    machine_roofline m;
    m.threads            = hw.n_threads_effective;
    m.read_bytes_per_s   = 100e9;
    m.kernel_bytes_per_s = {{"f16", 200e9}};
    hw.roofline          = m;
    ASSERT_FALSE(plan(ecfg, out));
    EXPECT_LT(ecfg.slo_itl_ms, fallback.itl_ms);
    EXPECT_LT(ecfg.slo_ttft_ms, fallback.ttft_ms);
    EXPECT_NE(out.profile_json.find("\"basis\":\"measured\""), std::string::npos) << out.profile_json;

    // An explicit value wins; an explicit 0 (off) turns that target off; each target on its own.
    o.slo_itl_ms  = 150;
    o.slo_ttft_ms = 0;
    ASSERT_FALSE(plan(ecfg, out));
    EXPECT_EQ(ecfg.slo_itl_ms, 150);
    EXPECT_EQ(ecfg.slo_ttft_ms, 0);
    EXPECT_NE(out.profile_json.find("\"ttft_ms\":null,\"ttft_source\":\"flag\""), std::string::npos)
        << out.profile_json;
    EXPECT_NE(out.profile_json.find("\"itl_ms\":150,\"itl_source\":\"flag\""), std::string::npos) << out.profile_json;
    o.slo_itl_ms = std::nullopt;
    ASSERT_FALSE(plan(ecfg, out));
    EXPECT_GT(ecfg.slo_itl_ms, 0);
    EXPECT_NE(out.profile_json.find("\"itl_source\":\"profile\""), std::string::npos) << out.profile_json;

    // --profile auto: the picked profile's defaults.
    o         = with_model();
    o.profile = "auto";
    ASSERT_FALSE(plan(ecfg, out));
    EXPECT_GT(ecfg.slo_itl_ms, 0);
    EXPECT_GT(ecfg.slo_ttft_ms, 0);
    EXPECT_NE(out.profile_json.find("\"ttft_source\":\"profile\""), std::string::npos) << out.profile_json;
}
