// GGML's quantized block formats (Q4_0, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K):
// block layouts, the reference quantizers that llama.cpp's llama-quantize runs
// without an importance matrix (same bytes for the same float input), the
// dequantizers, and llama-quantize's per-tensor type choice for its mixes
// (Q4_K_M, Q5_K_M, ...). docs/quantization.md has the formats and the rules.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

enum class QuantType : uint8_t { kNone, kQ4_0, kQ5_0, kQ5_1, kQ8_0, kQ4_K, kQ5_K, kQ6_K };

struct QuantInfo {
  QuantType type;
  std::string_view name;  // GGML's spelling: "Q4_K"
  uint32_t ggml_type;     // the GGUF tensor type id
  int block_elems;        // elements per block (32 or 256)
  int block_bytes;        // bytes per block
};

// Every quantized type (not kNone), in GGML type id order.
const std::vector<QuantInfo>& QuantTypes();
// REQUIRES: t != kNone.
const QuantInfo& QuantTypeInfo(QuantType t);
// "Q4_K" or "q4_k"; nullopt for anything else.
std::optional<QuantType> ParseQuantType(std::string_view name);
// The type with GGUF tensor type id `id`; nullopt when strata does not read it.
std::optional<QuantType> QuantTypeFromGgml(uint32_t id);
// Bytes of `n` elements (one row). REQUIRES: n % block_elems == 0.
uint64_t QuantRowBytes(QuantType t, int64_t n);

// Quantizes `n` floats (n % block_elems == 0) into QuantRowBytes(t, n) bytes
// at `out`, as ggml's quantize_row_<type>_ref does, bit for bit.
void QuantizeRow(QuantType t, const float* x, int64_t n, void* out);
// The inverse: QuantRowBytes(t, n) bytes at `q` to n floats, as ggml's
// dequantize_row_<type>.
void DequantizeRow(QuantType t, const void* q, int64_t n, float* out);
// Elements [begin, begin + count) of a quantized row of `n` elements.
void DequantizeRange(QuantType t, const void* row, int64_t n, int64_t begin, int64_t count, float* out);

// A whole-model choice of types, as llama-quantize's ftype argument.
enum class QuantMix { kQ4_0, kQ5_0, kQ5_1, kQ8_0, kQ4_K_S, kQ4_K_M, kQ5_K_S, kQ5_K_M, kQ6_K };
// "q4_k_m", "Q8_0", ...; nullopt for an unknown name.
std::optional<QuantMix> ParseQuantMix(std::string_view name);
std::string_view QuantMixName(QuantMix m);  // "Q4_K_M"
std::string QuantMixFlag(QuantMix m);       // "q4_k_m", as --type takes it
// The names ParseQuantMix accepts, for help and errors: "q4_0, q5_0, ...".
std::string QuantMixNames();

// What a tensor is, for the mix rules (llama.cpp's tensor names in brackets).
enum class QuantRole {
  kTokenEmbd,  // token_embd
  kOutput,     // output (lm_head; the embedding when tied)
  kAttnV,      // attn_v
  kFfnDown,    // ffn_down
  kOther,      // every other 2-D weight (attn_q, attn_k, attn_output, ffn_gate, ffn_up)
};
// The type llama-quantize (without --pure, --imatrix or type overrides) gives
// a 2-D weight of `cols` columns (row length) of role `role` in layer
// `layer` of `n_layers`, for mix `m`; kNone when it keeps the tensor as it is
// (llama-quantize writes F16 there: a row length no block type divides).
// `is_70b` is llama.cpp's LLM_TYPE_70B (80 layers with grouped KV heads).
QuantType MixTensorType(QuantMix m, QuantRole role, int layer, int n_layers, int64_t cols, bool is_70b);

}  // namespace strata
