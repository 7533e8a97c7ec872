// GGUF (v2/v3): a validating reader of the key/value section and the tensor
// infos, GGML's tensor types, the llama-family tensor names both ways, and the
// conversion of a GGUF tokenizer vocabulary ("llama" SPM or "gpt2" BPE) into
// the Hugging Face tokenizer.json / tokenizer_config.json pair and back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
std::string_view GgufTypeName(GgufType t);

struct GgufValue {
  GgufType type = GgufType::kUint8;
  GgufType elem_type = GgufType::kUint8;  // arrays only
  uint64_t u = 0;   // unsigned integers and bool
  int64_t i = 0;    // signed integers
  double f = 0;     // every numeric scalar, as a double
  std::string s;    // string
  uint64_t count = 0;                 // arrays: element count
  std::vector<std::string> strings;   // arrays of strings
  std::vector<double> numbers;        // arrays of numbers or bools (exact below 2^53)
  // Arrays of arrays are validated and counted; their elements are not kept.
};

// A GGML tensor type: its GGUF id, name, and block (elements and bytes; 1
// element for the plain types).
struct GgmlType {
  uint32_t id;
  std::string_view name;  // "Q4_K", "BF16"
  int block_elems;
  int block_bytes;
};
// Every GGML tensor type a GGUF file may hold (ids 0-39, less the removed
// ones); nullptr for an id that is none of them.
const GgmlType* FindGgmlType(uint32_t id);

// One tensor of a GGUF file, as its tensor info describes it (checked by
// GgufFile::Parse: a known type, whole blocks per row, data inside the file,
// aligned, overlapping no other tensor's).
struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outermost first, as in safetensors (GGUF's ne[] reversed)
  uint32_t type = 0;           // GGML type id
  uint64_t offset = 0;         // of the first byte, from the start of the file
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  // Parses the header, every key/value pair and the tensor infos of `bytes`.
  // `what` names the data in errors. Throws Error for a bad magic, a version
  // other than 2 or 3, counts or lengths that run past the end, an unknown
  // value type, a duplicate key, or a malformed tensor info: an empty or
  // repeated name, more than 4 or negative dimensions, an unknown type, a row
  // that is not whole blocks, a size that overflows, data that is misaligned,
  // runs past the end of `bytes` or overlaps another tensor's.
  static GgufFile Parse(std::string_view bytes, const std::string& what);
  // Maps and parses a file (tensor data is never touched).
  static GgufFile Read(const std::string& path);

  uint32_t version() const { return version_; }
  uint64_t tensor_count() const { return tensor_count_; }
  const std::string& what() const { return what_; }
  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }
  // The tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  const GgufValue* Find(std::string_view key) const;
  // Typed access; each throws Error naming the file and key when the key is
  // missing or of another type (any integer type serves GetInteger).
  std::string GetString(std::string_view key) const;
  int64_t GetInteger(std::string_view key) const;
  bool GetBool(std::string_view key) const;
  const std::vector<std::string>& GetStringArray(std::string_view key) const;
  const std::vector<double>& GetNumberArray(std::string_view key) const;
  std::optional<std::string> FindString(std::string_view key) const;
  std::optional<int64_t> FindInteger(std::string_view key) const;
  std::optional<bool> FindBool(std::string_view key) const;

 private:
  const GgufValue& Require(std::string_view key, const char* expected) const;
  std::string what_;
  uint32_t version_ = 0;
  uint64_t tensor_count_ = 0;
  std::vector<std::pair<std::string, GgufValue>> entries_;
  std::vector<GgufTensorInfo> tensors_;
};

// llama.cpp's name for a llama-family Hugging Face tensor name
// ("model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"), and
// the other way; nullopt for a name outside the table (gguf-py's
// tensor_mapping for llama, mistral and qwen2).
std::optional<std::string> GgufTensorName(std::string_view hf_name);
// Whether `path` names a GGUF file: it ends in ".gguf" after at least one
// other character (how compile, plans and sources tell a GGUF from a plan or
// a checkpoint directory).
inline bool IsGgufPath(std::string_view path) { return path.size() > 5 && path.ends_with(".gguf"); }
std::optional<std::string> HfTensorName(std::string_view gguf_name);
// llama.cpp's converter permutes the rows of q_proj and k_proj for the llama
// architecture: row `r` of the GGUF tensor is row GgufPermutedRow(r) of the HF
// one (w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2)).
// REQUIRES: rows % (2 * heads) == 0.
int64_t GgufPermutedRow(int64_t r, int64_t rows, int heads);

// llama.cpp's token types (tokenizer.ggml.token_type).
enum class GgufTokenType : int { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };
// tokenizer.ggml.token_type for `n` tokens (all kNormal when absent). Throws
// Error when its length is not `n` or an entry is not a small non-negative
// number. The one reader of token types (converter and tokenizer).
std::vector<int> GgufTokenTypes(const GgufFile& f, size_t n);

// A GGUF vocabulary as Hugging Face files, the way transformers' converters
// write them: "llama" becomes BPE with byte fallback, merges derived from the
// SentencePiece scores, the Prepend/Replace normalizer and the matching
// decoder; "gpt2" becomes byte-level BPE with the pre-tokenizer that
// tokenizer.ggml.pre names (gpt-2, llama-bpe, qwen2). Throws Error for other
// models or a vocabulary whose arrays disagree in length.
struct HfTokenizerFiles {
  std::string tokenizer_json, tokenizer_config_json;
  int vocab_size = 0, bos_id = -1, eos_id = -1;
};
HfTokenizerFiles GgufVocabToHf(const GgufFile& f);

// The other way: a Hugging Face tokenizer.json / tokenizer_config.json pair as
// the tokenizer.ggml.* keys llama.cpp reads. Byte-level BPE becomes "gpt2"
// with the pre-tokenizer name llama.cpp knows for its split (gpt-2,
// llama-bpe, qwen2); BPE with byte fallback and the SentencePiece
// normalizer becomes "llama", with scores that rank every token by its first
// merge (so GgufVocabToHf gives back the same merges, and llama.cpp's
// SentencePiece search merges in the same order). The token list is padded
// to `vocab_size` with "[PAD<i>]" tokens (unused), as llama.cpp's converter
// does. Throws Error naming `what` for another model or pre-tokenizer.
struct GgufVocabKeys {
  std::string model, pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;  // "llama" only
  std::vector<int32_t> types;
  std::vector<std::string> merges;  // "gpt2" only
  int bos = -1, eos = -1, unk = -1;
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> chat_template;
};
GgufVocabKeys HfToGgufVocab(std::string_view tokenizer_json, std::string_view tokenizer_config_json, int vocab_size,
                            const std::string& what);

}  // namespace strata
