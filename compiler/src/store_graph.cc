// What each node references, and listing the object files of a store.
#include "store_graph.h"

#include <filesystem>

#include "strata/formats/error.h"
#include "strata/formats/variant.h"

namespace strata::graph {

namespace fs = std::filesystem;

namespace {

Edge NodeEdge(const Hash& h, const char* want) { return Edge{false, h, want, std::nullopt}; }
Edge BlobEdge(const Hash& h) { return Edge{true, h, "", std::nullopt}; }

void TensorEdges(const Hash& h, const Json& j, ParsedNode& out) {
  TensorNode t = ParseTensorNode(j, h);
  if (t.op == TensorNode::Op::kBlob || t.op == TensorNode::Op::kQuant) out.edges.push_back(Edge{true, t.blob, "", t.nbytes()});
  for (const Hash& c : t.Children()) out.edges.push_back(NodeEdge(c, "tensor"));
  if (!t.leaf()) out.derived_bytes = t.nbytes();
}

void VariantEdges(const Store& store, const Hash& h, ParsedNode& out) {
  // LoadVariant re-reads the node: it is small, and the parser stays the one
  // export and the runtime use.
  Variant v = LoadVariant(store, h);
  out.edges.push_back(BlobEdge(v.config));
  out.edges.push_back(BlobEdge(v.plan));
  for (const auto& [name, blob] : v.files) out.edges.push_back(BlobEdge(blob));
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) out.edges.push_back(NodeEdge(t.node, "tensor"));
  for (const VariantLayer& l : v.layers) out.edges.push_back(NodeEdge(l.layer, "layer"));
}

}  // namespace

ParsedNode ParseNode(const Store& store, const Hash& h, const Json& j) {
  ParsedNode out;
  out.kind = j.value("kind", "");
  if (out.kind == "tensor") {
    TensorEdges(h, j, out);
  } else if (out.kind == "layer") {
    for (const auto& [role, t] : LoadLayer(store, h)) out.edges.push_back(NodeEdge(t, "tensor"));
  } else if (out.kind == "variant") {
    VariantEdges(store, h, out);
  } else {
    throw Error("node " + h.Hex() + " has unknown kind " + j.value("kind", Json(nullptr)).dump());
  }
  return out;
}

std::optional<ParsedNode> ReadNode(const Store& store, const Hash& h) {
  if (!store.HasNode(h)) return std::nullopt;
  return ParseNode(store, h, store.GetNode(h));  // GetNode checks bytes against the name
}

namespace {
// A directory's entries; an unreadable one is an Error a user can act on.
fs::directory_iterator Entries(const std::filesystem::path& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec)
    throw Error("cannot list " + dir.string() + ": " + ec.message() +
                (ec == std::errc::permission_denied ? " (run as the store's owner, or fix its permissions)" : ""));
  return it;
}
}  // namespace

std::vector<ObjectFile> ListObjects(const std::string& dir, std::vector<std::string>* stray) {
  std::vector<ObjectFile> out;
  for (const auto& fan : Entries(dir)) {
    const std::string fan_name = fan.path().filename().string();
    if (!fan.is_directory()) {
      if (stray) stray->push_back(fan.path().string());
      continue;
    }
    for (const auto& e : Entries(fan.path())) {
      const std::string name = e.path().filename().string();
      auto h = Hash::FromHex(name);
      std::error_code ec;
      uint64_t size = e.is_regular_file() ? e.file_size(ec) : 0;
      if (!h || !e.is_regular_file() || ec || name.compare(0, 2, fan_name) != 0 || fan_name.size() != 2) {
        if (stray) stray->push_back(e.path().string());
        continue;
      }
      out.push_back({*h, e.path().string(), size});
    }
  }
  return out;
}

std::string RelPath(const Store& store, const std::string& path) {
  const std::string& root = store.root();
  if (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/')
    return path.substr(root.size() + 1);
  return path;
}

}  // namespace strata::graph
