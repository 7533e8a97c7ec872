// Deterministic synthetic HF checkpoints, since no model can be downloaded
// here: real architectures and shapes, well-behaved values, every tensor distinct.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "strata/formats/dtype.h"

namespace strata {

struct SynthSpec {
  std::string arch = "mistral";  // a model_type of the architecture table (arch.h): llama | mistral | qwen2
  std::string preset = "tiny";   // tiny | small | mistral-7b (the presets table in synth.cc)
  std::optional<int> layers, hidden, heads, kv_heads, intermediate, vocab;
  DType dtype = DType::kBF16;
  uint64_t seed = 0;
  bool tie_embeddings = false;
  uint64_t shard_size = 5'000'000'000;  // HF's save_pretrained default "5GB"
  // A tokenizer built from a GGUF vocabulary: "llama-spm" or "gpt2" (empty:
  // none). tokenizer.json and tokenizer_config.json are written beside the
  // weights; vocab_size, bos and eos follow the vocabulary.
  std::string tokenizer, vocab_gguf;
  std::function<void(uint64_t total)> on_start;
  std::atomic<uint64_t>* bytes_done = nullptr;
};

struct SynthResult {
  std::string dir;  // the checkpoint directory written
  uint64_t parameters = 0, bytes = 0;
  int shards = 0;
};

// Writes the checkpoint into `out_dir` (which must not exist or be empty).
// Throws Error on unknown arch/preset, inconsistent sizes (hidden not divisible
// by heads, heads not by kv_heads), or a write failure; on failure nothing is
// left at `out_dir`.
SynthResult SynthToDir(const SynthSpec& spec, const std::string& out_dir);

// Writes the checkpoint into a Hugging Face hub cache as repo `id` ("org/name"):
// files under models--org--name/blobs, symlinked from snapshots/<rev>/, and
// refs/main naming <rev>, exactly the layout `huggingface-cli download` makes.
SynthResult SynthToHfCache(const SynthSpec& spec, const std::string& cache_dir, const std::string& id);

}  // namespace strata
