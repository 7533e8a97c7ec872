// Terminal progress bars.
#include "progress.h"

#include <cstdio>

namespace strata {

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1000 && u < 4) {
    v /= 1000;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return buf;
}

std::string ProgressBar::Amount(uint64_t n) const {
  return unit_.empty() ? HumanBytes(n) : std::to_string(n) + " " + unit_;
}

void ProgressBar::Start(uint64_t total) {
  total_ = total;
  start_ = std::chrono::steady_clock::now();
  if (!enabled_ || total == 0) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(200), [this] { return stop_; })) Draw(false);
  });
}

void ProgressBar::Finish() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  Draw(true);
  fputc('\n', stderr);
}

void ProgressBar::Draw(bool final) {
  uint64_t done = std::min(done_.load(), total_);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
  double frac = total_ ? static_cast<double>(done) / static_cast<double>(total_) : 1;
  constexpr int kWidth = 30;
  std::string bar(static_cast<size_t>(frac * kWidth), '#');
  bar.resize(kWidth, '.');
  char eta[32] = "";
  if (!final && rate > 0) {
    int s = static_cast<int>(static_cast<double>(total_ - done) / rate);
    snprintf(eta, sizeof eta, " ETA %dm%02ds", s / 60, s % 60);
  }
  fprintf(stderr, "\r%s [%s] %s / %s  %s/s%s   ", label_.c_str(), bar.c_str(), Amount(done).c_str(),
          Amount(total_).c_str(), Amount(static_cast<uint64_t>(rate)).c_str(), eta);
  fflush(stderr);
}

}  // namespace strata
