// Hugging Face checkpoint directories.
#include "strata/formats/hf_checkpoint.h"

#include <cstdio>
#include <filesystem>
#include <set>

#include "strata/formats/error.h"

namespace strata {

namespace fs = std::filesystem;

OrderedJson ReadConfigJson(const std::string& path) {
  std::string text = ReadFile(path);
  try {
    OrderedJson j = OrderedJson::parse(text);
    if (!j.is_object()) throw Error(path + ": expected a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
}

std::string DumpConfigJson(const OrderedJson& config) { return config.dump(2) + "\n"; }

HfCheckpoint::HfCheckpoint(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": not a directory");
  std::string config_path = dir + "/config.json";
  if (!FileExists(config_path))
    throw Error(dir + ": no config.json; is this a Hugging Face model directory?");
  config_ = ReadConfigJson(config_path);

  std::string index_path = dir + "/model.safetensors.index.json";
  if (FileExists(index_path)) {
    OrderedJson index = ReadConfigJson(index_path);
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      throw Error(index_path + ": no \"weight_map\" object");
    std::set<std::string> shards;
    for (auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) throw Error(index_path + ": weight_map[\"" + name + "\"] is not a file name");
      shards.insert(file.get<std::string>());
    }
    for (const std::string& s : shards) AddFile(s);
    for (auto& [name, file] : index["weight_map"].items())
      if (!tensors_.count(name))
        throw Error(index_path + ": lists tensor \"" + name + "\" in " +
                    file.get<std::string>() + ", which does not contain it");
  } else if (FileExists(dir + "/model.safetensors")) {
    AddFile("model.safetensors");
  } else if (FileExists(dir + "/pytorch_model.bin") ||
             FileExists(dir + "/pytorch_model.bin.index.json")) {
    throw Error(dir + ": only PyTorch .bin weights found; strata reads safetensors. "
                "Convert the checkpoint to safetensors first.");
  } else {
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
  }
}

void HfCheckpoint::AddFile(const std::string& file_name) {
  if (file_name.find('/') != std::string::npos || file_name.starts_with(".."))
    throw Error(dir_ + ": shard name \"" + file_name + "\" leaves the model directory");
  std::string path = dir_ + "/" + file_name;
  if (!FileExists(path)) throw Error(path + ": shard listed in the index does not exist");
  files_.push_back(std::make_unique<SafetensorsFile>(path));
  const SafetensorsFile* f = files_.back().get();
  for (const TensorInfo& t : f->tensors()) {
    if (tensors_.count(t.name))
      throw Error(dir_ + ": tensor \"" + t.name + "\" is stored in two files (" +
                  tensors_[t.name].file->path() + " and " + path + ")");
    tensors_[t.name] = Entry{f, &t};
  }
}

const HfCheckpoint::Entry* HfCheckpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> HfCheckpoint::OtherFiles() const {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir_)) {
    std::string n = e.path().filename().string();
    if (!e.is_regular_file()) continue;
    if (n.ends_with(".safetensors") || n == "model.safetensors.index.json" ||
        n == "config.json" || n.ends_with(".bin") || n.ends_with(".pt"))
      continue;
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string ShardIndexJson(uint64_t total_size,
                           const std::vector<std::pair<std::string, std::string>>& weight_map) {
  OrderedJson j;
  j["metadata"]["total_size"] = total_size;
  j["metadata"]["mergekit_version"] = "0.1.4";
  j["weight_map"] = OrderedJson::object();
  for (const auto& [name, file] : weight_map) j["weight_map"][name] = file;
  return j.dump(2);
}

std::string ShardFileName(int index, int count) {
  if (count == 1) return "model.safetensors";
  char buf[64];
  snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index, count);
  return buf;
}

}  // namespace strata
