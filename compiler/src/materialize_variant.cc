// strata materialize: computed tensors stored as blobs (materialize.h).
#include "strata/compiler/materialize.h"

#include <chrono>
#include <set>
#include <vector>

#include "strata/formats/error.h"
#include "strata/formats/file.h"
#include "strata/formats/materialize.h"
#include "strata/formats/variant.h"

namespace strata {

MaterializeStats MaterializeVariant(Store& store, const std::string& name, const MaterializeOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  FileLock lock(store.LockPath(), /*exclusive=*/false);  // gc may not sweep a blob before its entry is written
  MaterializeStats st;
  st.name = name;
  st.variant = store.ResolveRef(name);
  const Variant v = LoadVariant(store, st.variant);
  std::set<Hash> nodes;
  for (const auto* list : {&v.pre, &v.post})
    for (const NamedTensor& t : *list) nodes.insert(t.node);
  for (const VariantLayer& l : v.layers)
    for (const auto& [role, h] : LoadLayer(store, l.layer)) nodes.insert(h);
  st.tensors = nodes.size();

  TensorReader reader(store, /*verify=*/true);
  std::vector<Hash> todo;
  uint64_t todo_bytes = 0;
  for (const Hash& h : nodes) {
    const TensorNode& n = reader.Node(h);
    const bool zero = n.op == TensorNode::Op::kScale && n.factor == 0.0;  // loads map no bytes for it anyway
    if (n.leaf() || zero) continue;
    ++st.derived;
    st.bytes += n.nbytes();
    if (!opts.recompute && store.LookupMaterialized(h, n.nbytes())) {
      ++st.cached;
      continue;
    }
    todo.push_back(h);
    todo_bytes += n.nbytes();
  }
  if (opts.on_start) opts.on_start(todo_bytes);
  reader.UseMaterialized(false);  // computed from the recipe, never from an older entry
  std::string buf;
  for (const Hash& h : todo) {
    CheckInterrupt();
    const TensorNode n = reader.Node(h);
    buf.resize(n.nbytes());
    reader.Read(h, 0, n.numel(), buf.data());
    bool wrote = false;
    const Hash blob = store.PutBlob(buf, &wrote);
    store.RecordMaterialized(h, blob, n.nbytes());
    ++st.computed;
    if (wrote) {
      ++st.blobs_written;
      st.blob_bytes_written += n.nbytes();
    }
    if (opts.bytes_done) *opts.bytes_done += n.nbytes();
  }
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace strata
