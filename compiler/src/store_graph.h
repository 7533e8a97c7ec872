// Internal to compiler/: the store seen as a graph of objects (what each node
// references) and as directories of object files; shared by verify and gc.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "strata/formats/store.h"

namespace strata::graph {

// One reference from a node to another object.
struct Edge {
  bool blob = false;  // a blob; otherwise a node of kind `want`
  Hash hash;
  std::string want;               // "variant", "layer" or "tensor" for nodes
  std::optional<uint64_t> bytes;  // the size a tensor node needs its blob to have
};

struct ParsedNode {
  std::string kind;
  std::vector<Edge> edges;
  // A derived tensor node (merge, cast, scale): its bytes, the size of the
  // blob `strata materialize` may have stored for it.
  std::optional<uint64_t> derived_bytes;
};

// Parses the node `h` (its bytes `j` already matched its name) with the
// formats/variant.h parsers and lists what it references. Throws Error saying
// what is malformed when it is not a valid tensor, layer or variant node.
ParsedNode ParseNode(const Store& store, const Hash& h, const Json& j);

// Reads node `h`, checks its bytes against its name and parses it. Returns
// nullopt when the node file does not exist. Throws Error naming the node when
// it is unreadable, corrupt or malformed.
std::optional<ParsedNode> ReadNode(const Store& store, const Hash& h);

struct ObjectFile {
  Hash hash;
  std::string path;
  uint64_t size = 0;
};
// Every object file under `dir` (a store's blobs/ or nodes/). Files whose name
// is not a hash in its fan-out directory go to `stray` (when not null).
std::vector<ObjectFile> ListObjects(const std::string& dir, std::vector<std::string>* stray);

// `path` relative to the store root (as reports print it).
std::string RelPath(const Store& store, const std::string& path);

}  // namespace strata::graph
