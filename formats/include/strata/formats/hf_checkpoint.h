// A Hugging Face checkpoint directory: config.json (kept with unknown keys and
// key order) and its safetensors weights, single-file or sharded with an index.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/formats/safetensors.h"

namespace strata {

using OrderedJson = nlohmann::ordered_json;

// Reads and parses a config.json. Throws Error naming the path on failure.
OrderedJson ReadConfigJson(const std::string& path);
// Serializes config.json the way transformers' save_pretrained does
// (2-space indent, trailing newline).
std::string DumpConfigJson(const OrderedJson& config);

class HfCheckpoint {
 public:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  // Opens `dir`: config.json, then model.safetensors.index.json (every shard it
  // names) or else model.safetensors. Throws Error naming the directory and
  // what is missing or malformed (a tensor listed in the index but absent from
  // its shard, a shard that does not exist, only pytorch_model.bin present).
  explicit HfCheckpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const OrderedJson& config() const { return config_; }
  // Returns nullptr when the checkpoint has no tensor `name`.
  const Entry* Find(const std::string& name) const;
  const std::map<std::string, Entry>& tensors() const { return tensors_; }
  // Every file of the checkpoint that is not weights (tokenizer files and so on).
  std::vector<std::string> OtherFiles() const;

 private:
  void AddFile(const std::string& file_name);
  std::string dir_;
  OrderedJson config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> tensors_;
};

// Writes the index of a sharded checkpoint as mergekit does:
// {"metadata": {"total_size": N, "mergekit_version": "0.1.4"}, "weight_map": {...}}
// with 2-space indent, weight_map in the order given.
std::string ShardIndexJson(uint64_t total_size,
                           const std::vector<std::pair<std::string, std::string>>& weight_map);
// "model-00002-of-00005.safetensors", or "model.safetensors" when count == 1.
std::string ShardFileName(int index, int count);

}  // namespace strata
