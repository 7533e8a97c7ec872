// The paged KV cache's bookkeeping (see kv_cache.h).
#include "strata/runtime/kv_cache.h"

#include <algorithm>
#include <cstdio>

#include "strata/formats/error.h"

namespace strata {

namespace {

std::string Mib(uint64_t bytes) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

}  // namespace

KvSequences::KvSequences(int64_t total_blocks, int block_tokens, uint64_t block_bytes)
    : total_(total_blocks), block_tokens_(block_tokens), block_bytes_(block_bytes) {
  if (total_blocks < 1 || block_tokens < 1) throw Error("internal: a KV cache needs at least one block of one position");
  if (total_blocks > INT32_MAX) throw Error("internal: too many KV blocks");
  for (int64_t b = 0; b < total_blocks; ++b) free_.insert(free_.end(), static_cast<int32_t>(b));
}

int KvSequences::Create() {
  for (size_t i = 0; i < seqs_.size(); ++i)
    if (!seqs_[i].live) {
      seqs_[i] = Seq{true, 0, {}};
      return static_cast<int>(i);
    }
  seqs_.push_back(Seq{true, 0, {}});
  return static_cast<int>(seqs_.size() - 1);
}

bool KvSequences::Live(int seq) const {
  return seq >= 0 && static_cast<size_t>(seq) < seqs_.size() && seqs_[seq].live;
}

void KvSequences::RequireLive(int seq) const {
  if (!Live(seq)) throw Error("sequence " + std::to_string(seq) + " does not exist (never created, or released)");
}

void KvSequences::Release(int seq) {
  RequireLive(seq);
  for (int32_t b : seqs_[seq].blocks) free_.insert(b);
  seqs_[seq] = Seq{};
}

void KvSequences::Truncate(int seq, int64_t length) {
  RequireLive(seq);
  Seq& s = seqs_[seq];
  if (length < 0 || length > s.length)
    throw Error("cannot truncate sequence " + std::to_string(seq) + " of " + std::to_string(s.length) +
                " positions to " + std::to_string(length));
  const size_t keep = static_cast<size_t>(BlocksFor(length));
  for (size_t i = keep; i < s.blocks.size(); ++i) free_.insert(s.blocks[i]);
  s.blocks.resize(keep);
  s.length = length;
}

int64_t KvSequences::BlocksNeeded(const std::vector<int>& seqs, const std::vector<int64_t>& added) const {
  int64_t need = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    RequireLive(seqs[i]);
    const Seq& s = seqs_[seqs[i]];
    need += BlocksFor(s.length + added[i]) - static_cast<int64_t>(s.blocks.size());
  }
  return need;
}

void KvSequences::Grow(const std::vector<int>& seqs, const std::vector<int64_t>& added) {
  if (seqs.size() != added.size()) throw Error("internal: KvSequences::Grow with mismatched lists");
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (added[i] < 0) throw Error("internal: a sequence cannot grow by a negative length");
    for (size_t j = 0; j < i; ++j)
      if (seqs[j] == seqs[i]) throw Error("sequence " + std::to_string(seqs[i]) + " appears twice in one batch");
  }
  const int64_t need = BlocksNeeded(seqs, added);
  const int64_t free = static_cast<int64_t>(free_.size());
  if (need > free)
    throw Error("the KV cache is full: this step needs " + std::to_string(need) + " more blocks of " +
                std::to_string(block_tokens_) + " positions, " + std::to_string(free) + " of " +
                std::to_string(total_) + " are free (budget " + Mib(static_cast<uint64_t>(total_) * block_bytes_) +
                ", " + Mib(block_bytes_) + " per block); raise the KV budget (--kv-memory) or run fewer or shorter "
                "sequences");
  for (size_t i = 0; i < seqs.size(); ++i) {
    Seq& s = seqs_[seqs[i]];
    s.length += added[i];
    while (static_cast<int64_t>(s.blocks.size()) < BlocksFor(s.length)) {
      s.blocks.push_back(*free_.begin());
      free_.erase(free_.begin());
    }
  }
  peak_ = std::max(peak_, total_ - static_cast<int64_t>(free_.size()));
}

int64_t KvSequences::Length(int seq) const {
  RequireLive(seq);
  return seqs_[seq].length;
}

const std::vector<int32_t>& KvSequences::Blocks(int seq) const {
  RequireLive(seq);
  return seqs_[seq].blocks;
}

KvStats KvSequences::stats() const {
  KvStats s;
  s.block_tokens = block_tokens_;
  s.block_bytes = block_bytes_;
  s.total_blocks = total_;
  s.used_blocks = total_ - static_cast<int64_t>(free_.size());
  s.peak_used_blocks = peak_;
  for (const Seq& q : seqs_) s.sequences += q.live;
  return s;
}

int64_t KvBlocksForBudget(uint64_t budget_bytes, uint64_t block_bytes, int block_tokens, int64_t default_positions) {
  // With every layer elided nothing is cached: the blocks cost nothing, and
  // the budget is the default's whatever was asked.
  if (budget_bytes == 0 || block_bytes == 0)
    return std::max<int64_t>(1, (default_positions + block_tokens - 1) / block_tokens);
  if (budget_bytes < block_bytes)
    throw Error("the KV budget of " + Mib(budget_bytes) + " is smaller than one KV block (" + Mib(block_bytes) +
                " for " + std::to_string(block_tokens) + " positions of this model); give at least that");
  return static_cast<int64_t>(std::min<uint64_t>(budget_bytes / block_bytes, INT32_MAX));
}

}  // namespace strata
