// GGUF tensor infos: what GgufFile::Parse gives for a well-formed file (HF
// order shapes, absolute offsets, sizes from GGML's block table), the clean
// errors for hostile files (overlapping, misaligned, truncated or oversized
// data, unknown types, partial blocks, absurd dimensions, repeated names),
// and the llama-family name table and Q/K row permutation both ways.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <set>

#include "strata/formats/error.h"
#include "strata/formats/gguf.h"

namespace strata {
namespace {

using ::testing::HasSubstr;

struct Info {
  std::string name;
  std::vector<uint64_t> ne;  // GGUF order: innermost first
  uint32_t type;
  uint64_t offset;  // from the start of the data section
};

// A GGUF v3 file written by hand from the format description: no keys but
// general.alignment (when not 32), the infos, zero padding to the alignment,
// then `data_bytes` bytes of data.
std::string Build(const std::vector<Info>& infos, uint64_t data_bytes, uint32_t alignment = 32) {
  std::string b = "GGUF";
  auto put = [&b](auto v) { b.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  auto str = [&](const std::string& s) {
    put(static_cast<uint64_t>(s.size()));
    b += s;
  };
  put(uint32_t{3});
  put(static_cast<uint64_t>(infos.size()));
  put(uint64_t{alignment == 32 ? 0u : 1u});
  if (alignment != 32) {
    str("general.alignment");
    put(uint32_t{4});
    put(alignment);
  }
  for (const Info& i : infos) {
    str(i.name);
    put(static_cast<uint32_t>(i.ne.size()));
    for (uint64_t n : i.ne) put(n);
    put(i.type);
    put(i.offset);
  }
  b.append((alignment - b.size() % alignment) % alignment, '\0');
  b.append(data_bytes, '\x11');
  return b;
}

std::string ParseError(const std::string& bytes) {
  try {
    GgufFile::Parse(bytes, "t.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Where the data section starts in Build()'s output.
uint64_t DataStart(const std::string& file, uint64_t data_bytes) { return file.size() - data_bytes; }

TEST(GgufTensors, WellFormedInfos) {
  // A 64x32 Q4_K would be partial blocks; 2 rows of 256 Q4_K = 2 x 144 bytes.
  const std::vector<Info> infos = {{"token_embd.weight", {8, 3}, 30, 0},        // BF16 3x8: 48 bytes
                                   {"blk.0.attn_q.weight", {256, 2}, 12, 64},   // Q4_K: 288 bytes
                                   {"output_norm.weight", {8}, 0, 352}};        // F32: 32 bytes
  const std::string file = Build(infos, 384);
  const GgufFile f = GgufFile::Parse(file, "t.gguf");
  ASSERT_EQ(f.tensors().size(), 3u);
  const uint64_t start = DataStart(file, 384);
  EXPECT_EQ(start % 32, 0u);
  EXPECT_EQ(f.tensors()[0].shape, (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(f.tensors()[0].nbytes, 48u);
  EXPECT_EQ(f.tensors()[0].offset, start);
  EXPECT_EQ(f.tensors()[1].shape, (std::vector<int64_t>{2, 256}));
  EXPECT_EQ(f.tensors()[1].nbytes, 288u);
  EXPECT_EQ(f.tensors()[1].offset, start + 64);
  EXPECT_EQ(f.tensors()[2].shape, (std::vector<int64_t>{8}));
  EXPECT_EQ(f.tensors()[2].nbytes, 32u);
  EXPECT_EQ(f.tensors()[2].type, 0u);
}

TEST(GgufTensors, TypeTableHasGgmlBlocks) {
  // Block sizes from GGML's block structs (ggml-common.h), counted by hand.
  EXPECT_EQ(FindGgmlType(2)->block_bytes, 2 + 16);            // Q4_0: d, 16 nibble pairs
  EXPECT_EQ(FindGgmlType(8)->block_bytes, 2 + 32);            // Q8_0
  EXPECT_EQ(FindGgmlType(12)->block_bytes, 2 + 2 + 12 + 128);  // Q4_K: d, dmin, scales, qs
  EXPECT_EQ(FindGgmlType(13)->block_bytes, 2 + 2 + 12 + 32 + 128);
  EXPECT_EQ(FindGgmlType(14)->block_bytes, 128 + 64 + 16 + 2);  // Q6_K: ql, qh, scales, d
  EXPECT_EQ(FindGgmlType(11)->name, "Q3_K");
  EXPECT_EQ(FindGgmlType(30)->name, "BF16");
  EXPECT_EQ(FindGgmlType(4), nullptr);  // Q4_2, removed from GGML
  EXPECT_EQ(FindGgmlType(31), nullptr);
  EXPECT_EQ(FindGgmlType(1000), nullptr);
}

TEST(GgufTensors, OverlappingDataIsRejected) {
  const std::string file = Build({{"a", {32}, 0, 0}, {"b", {32}, 0, 96}}, 256);  // a: bytes 0-128
  EXPECT_THAT(ParseError(file), HasSubstr("overlap"));
  EXPECT_THAT(ParseError(file), HasSubstr("\"a\""));
  // Touching is fine; so is any order in the file.
  EXPECT_EQ(ParseError(Build({{"b", {32}, 0, 128}, {"a", {32}, 0, 0}}, 256)), "(no error)");
  // Zero-size tensors overlap nothing.
  EXPECT_EQ(ParseError(Build({{"a", {0}, 0, 0}, {"b", {32}, 0, 0}}, 128)), "(no error)");
}

TEST(GgufTensors, MisalignedDataIsRejected) {
  EXPECT_THAT(ParseError(Build({{"a", {4}, 0, 16}}, 64)), HasSubstr("not a multiple of the alignment 32"));
  // general.alignment is honoured: 16 is fine at alignment 16.
  EXPECT_EQ(ParseError(Build({{"a", {4}, 0, 16}}, 64, 16)), "(no error)");
  EXPECT_THAT(ParseError(Build({{"a", {4}, 0, 32}}, 64, 64)), HasSubstr("alignment 64"));
}

TEST(GgufTensors, DataPastTheEndIsRejected) {
  const std::string file = Build({{"a", {64}, 0, 0}}, 256);
  EXPECT_EQ(ParseError(file), "(no error)");
  // The file cut inside the tensor's data.
  EXPECT_THAT(ParseError(file.substr(0, file.size() - 1)), HasSubstr("past the end of the file"));
  // An offset near 2^64 does not wrap around.
  EXPECT_THAT(ParseError(Build({{"a", {64}, 0, ~uint64_t{31}}}, 256)), HasSubstr("past the end of the file"));
}

TEST(GgufTensors, AbsurdDimensionsAreRejected) {
  EXPECT_THAT(ParseError(Build({{"a", {uint64_t{1} << 40, uint64_t{1} << 40}, 0, 0}}, 64)),
              HasSubstr("more elements than fit in 64 bits"));
  EXPECT_THAT(ParseError(Build({{"a", {~uint64_t{0}}, 0, 0}}, 64)), HasSubstr("negative"));
  // 2^61 F32 elements: the count fits, the byte size does not.
  EXPECT_THAT(ParseError(Build({{"a", {uint64_t{1} << 62}, 0, 0}}, 64)), HasSubstr("overflows"));
  EXPECT_THAT(ParseError(Build({{"a", {1, 1, 1, 1, 1}, 0, 0}}, 64)), HasSubstr("5 dimensions"));
}

TEST(GgufTensors, TypesAndBlocksAreChecked) {
  EXPECT_THAT(ParseError(Build({{"a", {32}, 4, 0}}, 64)), HasSubstr("type id 4, which is no GGML tensor type"));
  EXPECT_THAT(ParseError(Build({{"a", {32}, 99, 0}}, 64)), HasSubstr("type id 99"));
  // Q4_K rows are whole 256-element blocks.
  EXPECT_THAT(ParseError(Build({{"w", {128, 2}, 12, 0}}, 512)), HasSubstr("not a whole number of its 256-element blocks"));
}

TEST(GgufTensors, NamesAreChecked) {
  EXPECT_THAT(ParseError(Build({{"a", {8}, 0, 0}, {"a", {8}, 0, 32}}, 64)), HasSubstr("both named \"a\""));
  EXPECT_THAT(ParseError(Build({{"", {8}, 0, 0}}, 64)), HasSubstr("empty name"));
}

TEST(GgufTensors, TruncatedInfosAreErrorsEverywhere) {
  const std::string file = Build({{"blk.0.attn_q.weight", {256, 2}, 12, 0}, {"n", {8}, 0, 288}}, 320);
  for (size_t n = 0; n < file.size() - 320; ++n) {
    try {
      GgufFile::Parse(file.substr(0, n), "t.gguf");
      ADD_FAILURE() << "a file cut at " << n << " bytes parsed";
    } catch (const Error&) {
    }
  }
}

TEST(GgufNames, BothWays) {
  EXPECT_EQ(GgufTensorName("model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight");
  EXPECT_EQ(GgufTensorName("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(GgufTensorName("model.layers.3.self_attn.v_proj.bias"), "blk.3.attn_v.bias");
  EXPECT_EQ(GgufTensorName("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(GgufTensorName("lm_head.weight"), "output.weight");
  EXPECT_EQ(GgufTensorName("model.layers.1.self_attn.rotary_emb.inv_freq"), std::nullopt);
  EXPECT_EQ(HfTensorName("blk.7.ffn_norm.weight"), "model.layers.7.post_attention_layernorm.weight");
  EXPECT_EQ(HfTensorName("output_norm.weight"), "model.norm.weight");
  for (const char* bad : {"blk.01.attn_q.weight", "blk.x.attn_q.weight", "blk.-1.attn_q.weight", "blk.3",
                          "blk.3.", "rope_freqs.weight", "blk.0.attn_qkv.weight", ""})
    EXPECT_EQ(HfTensorName(bad), std::nullopt) << bad;
  for (int l : {0, 5, 47})
    for (const char* role : {"input_layernorm.weight", "self_attn.k_proj.weight", "self_attn.o_proj.weight",
                             "mlp.gate_proj.weight", "mlp.up_proj.weight", "self_attn.q_proj.bias"}) {
      const std::string hf = "model.layers." + std::to_string(l) + "." + role;
      EXPECT_EQ(HfTensorName(*GgufTensorName(hf)), hf);
    }
}

TEST(GgufNames, PermutationIsLlamaCppsReshape) {
  // w.reshape(heads=2, 2, 2, cols).swapaxes(1, 2): for 8 rows, GGUF row r holds
  // HF row [0, 2, 1, 3, 4, 6, 5, 7][r] (worked by hand: within each head the
  // first and second halves interleave).
  const std::vector<int64_t> want = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(GgufPermutedRow(r, 8, 2), want[r]) << r;
  // One head of 6 rows: halves [0 1 2] and [3 4 5] interleave as 0 3 1 4 2 5.
  const std::vector<int64_t> one = {0, 3, 1, 4, 2, 5};
  for (int64_t r = 0; r < 6; ++r) EXPECT_EQ(GgufPermutedRow(r, 6, 1), one[r]) << r;
  // A bijection for a real shape (32 heads of 128).
  std::set<int64_t> seen;
  for (int64_t r = 0; r < 4096; ++r) seen.insert(GgufPermutedRow(r, 4096, 32));
  EXPECT_EQ(seen.size(), 4096u);
  EXPECT_EQ(*seen.rbegin(), 4095);
}

}  // namespace
}  // namespace strata
