// Writing a variant as one GGUF v3 file that llama.cpp (and so Ollama and LM
// Studio) loads: llama.cpp's architecture keys, the variant's tokenizer, Q/K
// rows permuted as llama.cpp's converter does, quantized tensors as their
// blocks. Streams tensor by tensor; docs/gguf.md has the mapping.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include "strata/formats/store.h"

namespace strata {

struct GgufExportOptions {
  // "keep": each tensor as stored (quantized blocks as they are, others in
  // their dtype); "f32", "f16", "bf16": every 2-D weight converted
  // (dequantized) to that type. Norms and biases are always F32, as llama.cpp's
  // converter writes them.
  std::string type = "keep";
  bool force = false;   // replace an existing file
  bool verify = true;   // hash every blob read
  std::function<void(uint64_t total)> on_start;  // total bytes of tensor data
  std::atomic<uint64_t>* bytes_done = nullptr;
};

struct GgufExportStats {
  uint64_t file_bytes = 0;
  size_t tensors = 0;
  uint32_t file_type = 0;  // general.file_type (llama_ftype)
  std::string tokenizer_model, tokenizer_pre;
};

// The size the file will have, without writing it (for --help's promise:
// GGUF cannot share tensors, so a DUS is written at its full logical size).
// Throws as ExportGguf, before any write.
uint64_t GgufExportSize(const Store& store, const std::string& name, const GgufExportOptions& opts);

// Writes variant `name` to `path` (a temporary beside it, renamed at the end:
// a failure or Ctrl-C leaves no partial file). Throws Error when `path`
// exists (without `force`), the variant is unknown, incomplete or damaged,
// its architecture has no GGUF mapping, or its tokenizer is not one llama.cpp
// can read (HfToGgufVocab).
GgufExportStats ExportGguf(const Store& store, const std::string& name, const std::string& path,
                           const GgufExportOptions& opts);

}  // namespace strata
