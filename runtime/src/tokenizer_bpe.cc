// The merge engines: BPE by merge rank (Hugging Face) and SentencePiece BPE by
// piece score (llama.cpp). Both keep symbols in a linked list and candidate
// pairs in a heap, so a long input costs O(n log n), not O(n^2).
#include <algorithm>
#include <cstdio>
#include <queue>

#include "strata/runtime/tokenizer_parts.h"
#include "strata/runtime/tokenizer_unicode.h"

namespace strata {

namespace {

struct Symbol {
  int id;          // token id, or -1 (SPM: not a token on its own)
  int prev, next;  // neighbours in the list, -1 at the ends
  uint32_t begin, len;  // bytes of the word; len 0 once merged into its left neighbour
};

std::array<int, 256> ByteTokenIds(const TokenIdMap& vocab) {
  std::array<int, 256> ids;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab.find(std::string_view(name));
    ids[b] = it == vocab.end() ? -1 : it->second;
  }
  return ids;
}

// Links `syms` into a list and makes `syms[right]` part of `syms[left]`.
void Absorb(std::vector<Symbol>& syms, int left, int right) {
  Symbol& l = syms[left];
  Symbol& r = syms[right];
  l.len += r.len;
  l.next = r.next;
  if (r.next >= 0) syms[r.next].prev = left;
  r.len = 0;
}

}  // namespace

bool WordCache::Find(std::string_view word, std::vector<int>& out) const {
  if (word.size() > kMaxWordBytes) return false;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(word);
  if (it == map_.end()) return false;
  out.insert(out.end(), it->second.begin(), it->second.end());
  return true;
}

void WordCache::Insert(std::string_view word, const std::vector<int>& ids, size_t begin) const {
  if (word.size() > kMaxWordBytes) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (map_.size() >= kMaxEntries) return;  // full: keep what is there (frequent words come early), as HF does
  map_.emplace(std::string(word), std::vector<int>(ids.begin() + begin, ids.end()));
}

BpeModel::BpeModel(const TokenIdMap& vocab, const std::vector<std::array<int, 3>>& merges, Options o)
    : vocab_(vocab), o_(o), byte_ids_(ByteTokenIds(vocab)) {
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(m[0])) << 32 | static_cast<uint32_t>(m[1]);
    merges_.emplace(key, std::pair<int, int>(static_cast<int>(rank), m[2]));  // the first rank of a pair wins
  }
}

void BpeModel::Encode(std::string_view word, std::vector<int>& out) const {
  if (word.empty()) return;
  if (o_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (cache_.Find(word, out)) return;
  size_t begin = out.size();
  Merge(word, out);
  cache_.Insert(word, out, begin);
}

void BpeModel::Merge(std::string_view word, std::vector<int>& out) const {
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  auto push = [&](int id, size_t begin, size_t len) {
    int k = static_cast<int>(syms.size());
    syms.push_back({id, k - 1, -1, static_cast<uint32_t>(begin), static_cast<uint32_t>(len)});
    if (k > 0) syms[k - 1].next = k;
  };
  for (size_t i = 0; i < word.size();) {
    size_t len = DecodeUtf8(word, i).len;
    auto it = vocab_.find(word.substr(i, len));
    if (it != vocab_.end()) {
      push(it->second, i, len);
    } else if (o_.byte_fallback &&
               std::all_of(word.begin() + i, word.begin() + i + len, [&](char c) { return byte_ids_[static_cast<uint8_t>(c)] >= 0; })) {
      for (size_t k = i; k < i + len; ++k) push(byte_ids_[static_cast<uint8_t>(word[k])], k, 1);
    } else if (o_.unk >= 0) {
      if (o_.fuse_unk && !syms.empty() && syms.back().id == o_.unk) syms.back().len += static_cast<uint32_t>(len);
      else push(o_.unk, i, len);
    }
    i += len;
  }
  // Candidates ordered by rank, then position: HF merges the best pair, leftmost first.
  struct Cand {
    int rank, pos, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int left) {
    if (left < 0 || syms[left].next < 0) return;
    uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(syms[left].id)) << 32 |
                   static_cast<uint32_t>(syms[syms[left].next].id);
    auto it = merges_.find(key);
    if (it != merges_.end()) heap.push({it->second.first, left, it->second.second});
  };
  for (int k = 0; k + 1 < static_cast<int>(syms.size()); ++k) consider(k);
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    Symbol& s = syms[c.pos];
    if (s.len == 0 || s.next < 0) continue;
    uint64_t key = static_cast<uint64_t>(static_cast<uint32_t>(s.id)) << 32 | static_cast<uint32_t>(syms[s.next].id);
    auto it = merges_.find(key);
    if (it == merges_.end() || it->second.second != c.merged) continue;  // the pair changed since
    Absorb(syms, c.pos, s.next);
    syms[c.pos].id = c.merged;
    consider(syms[c.pos].prev);
    consider(c.pos);
  }
  for (int k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) out.push_back(syms[k].id);
}

SpmModel::SpmModel(const TokenIdMap& vocab, std::vector<float> scores, std::vector<uint8_t> mergeable, int unk)
    : vocab_(vocab), scores_(std::move(scores)), mergeable_(std::move(mergeable)), unk_(unk), byte_ids_(ByteTokenIds(vocab)) {}

void SpmModel::Encode(std::string_view text, std::vector<int>& out) const {
  if (cache_.Find(text, out)) return;
  const size_t first = out.size();
  Merge(text, out);
  cache_.Insert(text, out, first);
}

void SpmModel::Merge(std::string_view text, std::vector<int>& out) const {
  std::vector<Symbol> syms;
  syms.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t len = static_cast<uint32_t>(DecodeUtf8(text, i).len);
    int k = static_cast<int>(syms.size());
    syms.push_back({-1, k - 1, -1, static_cast<uint32_t>(i), len});
    if (k > 0) syms[k - 1].next = k;
    i += len;
  }
  // Highest score first, then leftmost (llama.cpp's llm_bigram_spm ordering).
  struct Bigram {
    float score;
    int left, right;
    uint32_t size;
    bool operator<(const Bigram& o) const { return score != o.score ? score < o.score : left > o.left; }
  };
  std::priority_queue<Bigram> heap;
  auto consider = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    std::string_view piece = text.substr(syms[left].begin, syms[left].len + syms[right].len);
    auto it = vocab_.find(piece);
    if (it == vocab_.end() || !mergeable_[it->second]) return;
    heap.push({scores_[it->second], left, right, static_cast<uint32_t>(piece.size())});
  };
  for (int k = 1; k < static_cast<int>(syms.size()); ++k) consider(k - 1, k);
  while (!heap.empty()) {
    Bigram b = heap.top();
    heap.pop();
    const Symbol &l = syms[b.left], &r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.size) continue;  // one side merged since
    Absorb(syms, b.left, b.right);
    consider(syms[b.left].prev, b.left);
    consider(b.left, syms[b.left].next);
  }
  // Merged symbols are pieces by construction; a lone character may not be,
  // and then its bytes are emitted as byte tokens.
  for (int k = syms.empty() ? -1 : 0; k >= 0; k = syms[k].next) {
    std::string_view piece = text.substr(syms[k].begin, syms[k].len);
    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      continue;
    }
    for (unsigned char c : piece) {
      int id = byte_ids_[c] >= 0 ? byte_ids_[c] : unk_;
      if (id >= 0) out.push_back(id);
    }
  }
}

}  // namespace strata
