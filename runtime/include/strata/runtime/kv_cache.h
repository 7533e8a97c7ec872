// The paged KV cache's bookkeeping, shared by every backend (docs/runtime.md,
// "Paged KV cache"): a budget of fixed-size blocks, each holding
// `block_tokens` positions of K and V for every computed layer, and the
// sequences' block tables. The storage itself is the backend's (host memory
// on the CPU, device memory on CUDA), addressed by block id.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace strata {

struct KvStats {
  int block_tokens = 0;          // positions per block
  uint64_t block_bytes = 0;      // bytes one block holds (K and V, every computed layer)
  int64_t total_blocks = 0;      // the budget
  int64_t used_blocks = 0;       // held by live sequences
  int64_t peak_used_blocks = 0;  // the most ever held at once
  int sequences = 0;             // live sequences
  uint64_t used_bytes() const { return static_cast<uint64_t>(used_blocks) * block_bytes; }
  int64_t free_blocks() const { return total_blocks - used_blocks; }
};

// Sequences over a pool of KV blocks. Every call either does all it says or,
// when it throws, changes nothing.
class KvSequences {
 public:
  // REQUIRES: block_tokens >= 1, total_blocks >= 1.
  KvSequences(int64_t total_blocks, int block_tokens, uint64_t block_bytes);

  // A new empty sequence (no blocks yet); ids of released sequences are reused.
  int Create();
  // Frees the sequence's blocks for reuse. Throws Error for an unknown id.
  void Release(int seq);
  // Keeps the first `length` positions (<= the current length) and frees the
  // blocks past them. Throws Error for an unknown id or a longer length.
  void Truncate(int seq, int64_t length);

  // Blocks that growing each sequence in `seqs` by `added[i]` positions would
  // allocate (a sequence may appear once).
  int64_t BlocksNeeded(const std::vector<int>& seqs, const std::vector<int64_t>& added) const;
  // Grows each sequence by `added[i]` positions, allocating blocks (lowest
  // free id first, so the storage a process touches stays compact). Throws
  // Error, allocating nothing, when the budget has too few free blocks: the
  // message says how many were needed, how many are free, and the budget.
  void Grow(const std::vector<int>& seqs, const std::vector<int64_t>& added);

  bool Live(int seq) const;
  // Throws Error unless `seq` is a live sequence.
  void RequireLive(int seq) const;
  int64_t Length(int seq) const;
  const std::vector<int32_t>& Blocks(int seq) const;
  KvStats stats() const;
  int block_tokens() const { return block_tokens_; }
  int64_t total_blocks() const { return total_; }

 private:
  struct Seq {
    bool live = false;
    int64_t length = 0;
    std::vector<int32_t> blocks;
  };
  int64_t BlocksFor(int64_t length) const { return (length + block_tokens_ - 1) / block_tokens_; }
  int64_t total_;
  int block_tokens_;
  uint64_t block_bytes_;
  std::set<int32_t> free_;  // free block ids, lowest first
  std::vector<Seq> seqs_;
  int64_t peak_ = 0;
};

// The number of blocks a budget of `budget_bytes` holds (at least 1), or,
// with budget 0 or blocks of 0 bytes (every layer elided: nothing is cached),
// enough for `default_positions` positions. Throws Error when a nonzero
// budget is smaller than one block, saying the block's size.
int64_t KvBlocksForBudget(uint64_t budget_bytes, uint64_t block_bytes, int block_tokens, int64_t default_positions);

}  // namespace strata
