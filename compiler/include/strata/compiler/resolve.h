// Finding a plan's model references on this machine: a local directory, or an
// HF id (optionally "@revision") in the local Hugging Face cache. Never downloads.
#pragma once

#include <string>
#include <vector>

namespace strata {

struct ResolvedModel {
  std::string ref;       // as written in the plan
  std::string dir;       // the checkpoint directory, or the GGUF file
  std::string revision;  // snapshot commit for HF ids, empty for local dirs
};

// The HF hub cache directory: $HF_HUB_CACHE, else $HF_HOME/hub, else
// ~/.cache/huggingface/hub.
std::string HfHubCacheDir();

// Resolves `ref`: a name ending in .gguf is a GGUF file (Error when it is
// not a regular file); an existing directory (absolute or relative to the working
// directory) is used as it is; otherwise "org/name[@rev]" is looked up as
// <cache>/models--org--name/snapshots/<commit>, where <commit> is `rev` when it
// names a snapshot, else the content of refs/<rev or main>. Throws Error
// listing every place it looked when nothing is found.
ResolvedModel ResolveModel(const std::string& ref);

}  // namespace strata
