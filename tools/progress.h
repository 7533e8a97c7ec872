// A progress bar on stderr (bytes, rate, ETA), drawn only on a terminal.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace strata {

class ProgressBar {
 public:
  // Draws only when `enabled` (the caller checks isatty and --quiet). With a
  // `unit` ("tokens") it counts things, not bytes.
  ProgressBar(std::string label, bool enabled, std::string unit = "")
      : label_(std::move(label)), enabled_(enabled), unit_(std::move(unit)) {}
  ~ProgressBar() { Finish(); }
  // Starts drawing towards `total` bytes (or units); `counter()` is advanced by the work.
  void Start(uint64_t total);
  void Finish();
  std::atomic<uint64_t>* counter() { return &done_; }

 private:
  void Draw(bool final);
  std::string Amount(uint64_t n) const;
  std::string label_;
  bool enabled_;
  std::string unit_;
  uint64_t total_ = 0;
  std::atomic<uint64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
};

// "1.23 GB", "512 KB", "17 B" (decimal units, as disk sizes are sold).
std::string HumanBytes(uint64_t n);

}  // namespace strata
