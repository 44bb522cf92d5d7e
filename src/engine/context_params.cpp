#include "engine/context_params.h"

namespace inferbox {

void set_attention_params(llama_context_params &cp, std::optional<kv_cache_type> kv, flash_attention fa) {
    const kv_cache_type t = kv.value_or(kv_cache_type::f16);
    cp.type_k = cp.type_v = t == kv_cache_type::q8_0  ? GGML_TYPE_Q8_0
                            : t == kv_cache_type::f32 ? GGML_TYPE_F32
                                                      : GGML_TYPE_F16;
    cp.flash_attn_type    = fa == flash_attention::on    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                            : fa == flash_attention::off ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                         : LLAMA_FLASH_ATTN_TYPE_AUTO;
}

} // namespace inferbox
