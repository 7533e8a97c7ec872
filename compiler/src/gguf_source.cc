// A GGUF file as a compile source: its keys become a config.json, its
// tensors HF names (Q/K rows put back in HF's order, quantized tensors kept as
// their blocks), its vocabulary tokenizer.json (docs/gguf.md, "Import").
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>

#include "source_model.h"
#include "strata/compiler/compile.h"
#include "strata/compiler/plan.h"
#include "strata/formats/arch.h"
#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/gguf.h"
#include "strata/formats/model_config.h"

namespace strata {

namespace {

// A float32 key as the decimal it was written from (1e-05, not 9.99999974738e-06).
double ShortestDouble(double f32) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf) - 1, static_cast<float>(f32));
  *end = '\0';
  return std::strtod(buf, nullptr);
}

// The architecture llama.cpp's name stands for: the first table entry with it
// (llama: LlamaForCausalLM, which is also what a Mistral GGUF computes in
// llama.cpp, without a sliding window).
const ArchInfo* ArchOfGguf(const std::string& name) {
  for (const ArchInfo& a : AllArchs())
    if (a.gguf_arch == name) return &a;
  return nullptr;
}

std::string ImportedArchNames() {
  std::string out;
  for (const ArchInfo& a : AllArchs())
    if (!a.gguf_arch.empty() && out.find(std::string(a.gguf_arch)) == std::string::npos)
      out += (out.empty() ? "" : ", ") + std::string(a.gguf_arch);
  return out;
}

// Whether every F32 element of `t` (in `m`) survives a round trip through `d`.
bool ExactIn(const MappedFile& m, const SourceTensor& t, DType d) {
  const size_t n = t.nbytes / 4;
  std::vector<char> narrow(n * DTypeSize(d));
  std::vector<float> back(n);
  ConvertElements(DType::kF32, m.data() + t.offset, d, narrow.data(), n);
  ConvertElements(d, narrow.data(), DType::kF32, back.data(), n);
  return std::memcmp(back.data(), m.data() + t.offset, n * 4) == 0;
}

// The architecture of `f`. Throws Error when strata does not import it.
const ArchInfo* RequireImportedArch(const GgufFile& f) {
  const std::string arch = f.GetString("general.architecture");
  if (const ArchInfo* a = ArchOfGguf(arch)) return a;
  throw Error("GGUF " + f.what() + ": its architecture is \"" + arch + "\"; strata imports " + ImportedArchNames() +
              " GGUF files (compile the Hugging Face checkpoint instead)");
}

class GgufSource : public SourceModel {
 public:
  explicit GgufSource(const std::string& path);
  const OrderedJson& config() const override { return config_; }
  const SourceTensor* Find(const std::string& name) const override {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  std::map<std::string, std::string> TokenizerFiles() const override { return tokenizer_; }

 private:
  [[noreturn]] void Fail(const std::string& msg) const { throw Error("GGUF " + path_ + ": " + msg); }
  void ReadConfig(const GgufFile& f);
  void ReadTensors(const GgufFile& f, const MappedFile& m);
  void ReadRopeFreqs(const GgufTensorInfo& info, const MappedFile& m);
  void CheckShapes();

  std::string path_, arch_key_;
  const ArchInfo* arch_ = nullptr;
  OrderedJson config_;
  std::map<std::string, SourceTensor> tensors_;
  std::map<std::string, std::string> tokenizer_;
};

GgufSource::GgufSource(const std::string& path) : path_(path) {
  MappedFile m(path);
  const GgufFile f = GgufFile::Parse(std::string_view(reinterpret_cast<const char*>(m.data()), m.size()), path);
  arch_ = RequireImportedArch(f);
  arch_key_ = std::string(arch_->gguf_arch);
  ReadConfig(f);
  ReadTensors(f, m);
  CheckShapes();
  if (f.Find("tokenizer.ggml.model")) {
    HfTokenizerFiles t = GgufVocabToHf(f);
    tokenizer_["tokenizer.json"] = std::move(t.tokenizer_json);
    tokenizer_["tokenizer_config.json"] = std::move(t.tokenizer_config_json);
  }
}

void GgufSource::ReadConfig(const GgufFile& f) {
  const std::string a = arch_key_ + ".";
  auto integer = [&](const std::string& key, std::optional<int64_t> fallback) -> int64_t {
    const auto v = f.FindInteger(a + key);
    if (!v && !fallback) Fail("it has no " + a + key + ", which a " + arch_key_ + " model needs");
    const int64_t x = v ? *v : *fallback;
    if (x < 0 || x > (int64_t{1} << 31) - 1) Fail(a + key + " is " + std::to_string(x) + ", out of range");
    return x;
  };
  auto number = [&](const std::string& key, std::optional<double> fallback) -> double {
    const GgufValue* v = f.Find(a + key);
    if (!v && !fallback) Fail("it has no " + a + key + ", which a " + arch_key_ + " model needs");
    if (v && v->type != GgufType::kFloat32 && v->type != GgufType::kFloat64)
      Fail(a + key + " is " + std::string(GgufTypeName(v->type)) + ", expected float32");
    return v ? (v->type == GgufType::kFloat32 ? ShortestDouble(v->f) : v->f) : *fallback;
  };
  if (integer("expert_count", 0) > 0)
    Fail("it is a mixture of experts (" + a + "expert_count " + std::to_string(integer("expert_count", 0)) +
         "), which strata does not run");
  const int64_t heads = integer("attention.head_count", std::nullopt);
  const int64_t hidden = integer("embedding_length", std::nullopt);
  const int64_t kv_heads = integer("attention.head_count_kv", heads);
  if (heads == 0) Fail(a + "attention.head_count is 0");
  const int64_t head_dim = integer("attention.key_length", hidden / heads);
  if (integer("attention.value_length", head_dim) != head_dim)
    Fail(a + "attention.value_length differs from key_length; strata runs equal key and value heads");
  if (integer("rope.dimension_count", head_dim) != head_dim)
    Fail(a + "rope.dimension_count is " + std::to_string(integer("rope.dimension_count", 0)) +
         " but the heads have " + std::to_string(head_dim) + " dimensions; strata rotates whole heads");

  OrderedJson c = OrderedJson::object();
  c["architectures"] = {std::string(arch_->hf_name)};
  c["model_type"] = std::string(arch_->model_type);
  c["hidden_size"] = hidden;
  c["intermediate_size"] = integer("feed_forward_length", std::nullopt);
  c["num_hidden_layers"] = integer("block_count", std::nullopt);
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = kv_heads;
  c["head_dim"] = head_dim;
  c["max_position_embeddings"] = integer("context_length", arch_->defaults.max_position_embeddings);
  c["rms_norm_eps"] = number("attention.layer_norm_rms_epsilon", std::nullopt);
  c["rope_theta"] = number("rope.freq_base", 10000.0);
  const std::string scaling = f.FindString(a + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", number("rope.scaling.factor", std::nullopt)}};
  } else if (scaling != "none") {
    Fail(a + "rope.scaling.type is \"" + scaling + "\"; strata imports none and linear");
  }
  c["hidden_act"] = "silu";
  c["tie_word_embeddings"] = false;  // set below from the tensors
  config_ = std::move(c);
}

void GgufSource::ReadTensors(const GgufFile& f, const MappedFile& m) {
  std::vector<std::string> unknown;
  std::map<DType, int> matrix_dtypes;
  for (const GgufTensorInfo& info : f.tensors()) {
    if (info.name == "rope_freqs.weight") {
      ReadRopeFreqs(info, m);
      continue;
    }
    auto hf = HfTensorName(info.name);
    if (!hf) {
      unknown.push_back(info.name);
      continue;
    }
    SourceTensor t;
    t.path = path_;
    t.offset = info.offset;
    t.nbytes = info.nbytes;
    t.shape = info.shape;
    const GgmlType& type = *FindGgmlType(info.type);
    if (info.type == 0 || info.type == 1 || info.type == 30) {
      t.dtype = info.type == 0 ? DType::kF32 : info.type == 1 ? DType::kF16 : DType::kBF16;
      if (t.shape.size() == 2) ++matrix_dtypes[t.dtype];
    } else if (auto q = QuantTypeFromGgml(info.type); q && t.shape.size() == 2) {
      t.quant = *q;
    } else {
      Fail("tensor " + info.name + " is " + std::string(type.name) + (t.shape.size() == 2 ? "" : " and not 2-D") +
           "; strata imports F32, F16, BF16 and, for 2-D weights, Q4_0, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K "
           "(re-quantize the file with llama-quantize to one of them, or import an unquantized one)");
    }
    tensors_.emplace(*hf, std::move(t));
  }
  if (!unknown.empty()) {
    std::string names;
    for (size_t k = 0; k < unknown.size() && k < 4; ++k) names += (k ? ", " : "") + unknown[k];
    if (unknown.size() > 4) names += ", ... (" + std::to_string(unknown.size()) + " in all)";
    Fail("it has tensors strata does not know in a " + arch_key_ + " model: " + names);
  }
  // The element type of the model: that of its unquantized matrices; when
  // every matrix is quantized, the first of BF16 and F16 in which every F32
  // vector (norms, biases: the converter widens them) is exact, which finds
  // the checkpoint's type; F32 when neither is.
  auto vectors_exact_in = [&](DType d) {
    for (const auto& [name, t] : tensors_)
      if (t.quant == QuantType::kNone && t.dtype == DType::kF32 && t.shape.size() == 1 && !ExactIn(m, t, d))
        return false;
    return true;
  };
  DType model_dtype = DType::kF32;
  int most = 0;
  for (const auto& [d, n] : matrix_dtypes)
    if (n > most) most = n, model_dtype = d;
  if (matrix_dtypes.empty())
    model_dtype = vectors_exact_in(DType::kBF16) ? DType::kBF16 : vectors_exact_in(DType::kF16) ? DType::kF16 : DType::kF32;
  config_["torch_dtype"] = std::string(TorchDTypeName(model_dtype));
  config_["tie_word_embeddings"] = !tensors_.count("lm_head.weight");
  // vocab_size: the key, else the embedding's rows, else the token list.
  int64_t vocab = 0;
  if (auto v = f.FindInteger(arch_key_ + ".vocab_size")) vocab = *v;
  else if (auto e = tensors_.find("model.embed_tokens.weight"); e != tensors_.end() && e->second.shape.size() == 2)
    vocab = e->second.shape[0];
  else if (f.Find("tokenizer.ggml.tokens")) vocab = static_cast<int64_t>(f.GetStringArray("tokenizer.ggml.tokens").size());
  config_["vocab_size"] = vocab;
  for (const char* k : {"bos", "eos"})
    if (auto id = f.FindInteger(std::string("tokenizer.ggml.") + k + "_token_id"))
      config_[std::string(k) + "_token_id"] = *id;
  for (auto& [name, t] : tensors_) {
    if (t.quant != QuantType::kNone) t.dtype = model_dtype;
    // Norms and biases GGUF widened to F32 go back to the model's type when
    // that loses nothing, so they are the tensors of the checkpoint converted.
    if (t.quant == QuantType::kNone && t.dtype == DType::kF32 && model_dtype != DType::kF32 && t.shape.size() == 1 &&
        ExactIn(m, t, model_dtype)) {
      t.dtype = model_dtype;
      t.from_f32 = true;
    }
  }
}

// rope_freqs: the per-frequency factors llama.cpp's converter writes for
// Llama 3's rope_scaling. They are read back as the rope_scaling they come
// from (factor: the lowest frequency's; Llama 3's bands: low 1, high 4,
// original context 8192), and refused unless every factor is that rule's.
void GgufSource::ReadRopeFreqs(const GgufTensorInfo& info, const MappedFile& m) {
  const int64_t head_dim = config_["head_dim"].get<int64_t>();
  if (arch_key_ != "llama" || info.type != 0 || info.shape != std::vector<int64_t>{head_dim / 2})
    Fail("rope_freqs.weight must be F32 of " + std::to_string(head_dim / 2) + " factors in a llama model");
  if (config_.contains("rope_scaling")) Fail("it has both rope_freqs.weight and " + arch_key_ + ".rope.scaling.type");
  std::vector<float> got(head_dim / 2);
  std::memcpy(got.data(), m.data() + info.offset, info.nbytes);
  OrderedJson c = config_;
  c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", ShortestDouble(got.back())}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  c["vocab_size"] = 1;  // not known yet; RopeFactors does not read it
  std::vector<double> want;
  try {
    want = RopeFactors(ParseModelConfig(c));
  } catch (const Error& e) {
    Fail(std::string("rope_freqs.weight is not Llama 3's rope scaling: ") + e.what());
  }
  for (size_t i = 0; i < want.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 1e-5 * want[i]))
      Fail("rope_freqs.weight[" + std::to_string(i) + "] is " + std::to_string(got[i]) + " where Llama 3's rope scaling "
           "(factor " + std::to_string(got.back()) + ", low 1, high 4, original context 8192) has " +
           std::to_string(want[i]) + "; strata imports only that rule's factors");
  config_["rope_scaling"] = c["rope_scaling"];
}

void GgufSource::CheckShapes() {
  ModelConfig c;
  try {
    c = ParseModelConfig(config_);
  } catch (const Error& e) {
    Fail(std::string("its keys do not make a valid model: ") + e.what());
  }
  for (auto& [name, t] : tensors_) {
    std::optional<std::vector<int64_t>> want;
    if (auto split = SplitLayerTensorName(name)) {
      if (split->first >= c.layers)
        Fail("it has tensor " + *GgufTensorName(name) + " but " + arch_key_ + ".block_count is " +
             std::to_string(c.layers));
      for (const RoleName& r : arch_->layer)
        if (r.name == split->second) {
          want = RoleShape(c, r.role);
          if (arch_->gguf_permute_qk && r.role == Role::kQ) t.unpermute_heads = c.heads;
          if (arch_->gguf_permute_qk && r.role == Role::kK) t.unpermute_heads = c.kv_heads;
        }
      if (!want)
        Fail("it has tensor " + *GgufTensorName(name) + ", which a " + std::string(arch_->hf_name) + " layer has not");
    } else {
      want = NonLayerShape(c, name);
    }
    if (want && *want != t.shape)
      Fail("tensor " + *GgufTensorName(name) + " has shape " + Json(t.shape).dump() + " but the keys say " +
           Json(*want).dump() + " (HF order, rows first)");
  }
}

}  // namespace

std::unique_ptr<SourceModel> OpenGgufSource(const std::string& path) { return std::make_unique<GgufSource>(path); }

Plan GgufImportPlan(const std::string& path) {
  const GgufFile f = GgufFile::Read(path);
  const int64_t layers = f.GetInteger(std::string(RequireImportedArch(f)->gguf_arch) + ".block_count");
  const std::string text = "# strata compile " + path + ": every layer of the GGUF file, as it is\n"
                           "merge_method: passthrough\n"
                           "slices:\n"
                           "  - sources:\n"
                           "      - model: " + Json(path).dump() + "\n"
                           "        layer_range: [0, " + std::to_string(layers) + "]\n";
  return ParsePlan(text, path);
}

}  // namespace strata
