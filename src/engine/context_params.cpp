#include "engine/context_params.h"

namespace inferbox {

void set_attention_params(llama_context_params &cp, kv_precision kv, flash_attention fa) {
    cp.type_k = cp.type_v = kv == kv_precision::q8_0  ? GGML_TYPE_Q8_0
                            : kv == kv_precision::f32 ? GGML_TYPE_F32
                                                      : GGML_TYPE_F16;
    cp.flash_attn_type    = fa == flash_attention::on    ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                            : fa == flash_attention::off ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                                         : LLAMA_FLASH_ATTN_TYPE_AUTO;
}

} // namespace inferbox
