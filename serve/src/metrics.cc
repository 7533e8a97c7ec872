// Prometheus text exposition (metrics.h).
#include "strata/serve/metrics.h"

#include <cstdio>
#include <cstdlib>

namespace strata::serve {

namespace {

// Seconds: from 1 ms to 60 s, roughly x2.5 apart (TTFT, inter-token latency, request time).
const std::vector<double>& Buckets() {
  static const std::vector<double> b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,      2.5,   5,    10,    30,   60};
  return b;
}

const char* Help(const std::string& name) {
  if (name == "strata_requests_total") return "HTTP requests answered, by endpoint and status";
  if (name == "strata_prompt_tokens_total") return "prompt tokens of finished generation requests";
  if (name == "strata_completion_tokens_total") return "tokens generated";
  if (name == "strata_time_to_first_token_seconds") return "request received to first generated token";
  if (name == "strata_inter_token_latency_seconds") return "time between successive generated tokens of a request";
  if (name == "strata_request_duration_seconds") return "generation request received to last token";
  return "strata metric";
}

// The shortest of %.15g..%.17g that reads back as `v`: le="0.1", not
// le="0.10000000000000001" (Prometheus' clients write bounds so, and a series
// is named by its label text).
std::string Num(double v) {
  char buf[64];
  for (int digits = 15; digits <= 17; ++digits) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (strtod(buf, nullptr) == v) break;
  }
  return buf;
}

}  // namespace

std::string Metrics::Label(const std::string& key, const std::string& value) {
  std::string out = key + "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out + "\"";
}

void Metrics::Add(const std::string& name, const std::string& labels, double v) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_[name][labels] += v;
}

void Metrics::Observe(const std::string& name, const std::string& labels, double seconds) {
  std::lock_guard<std::mutex> lock(mu_);
  Histogram& h = histograms_[name][labels];
  if (h.counts.empty()) h.counts.assign(Buckets().size(), 0);
  for (size_t i = 0; i < Buckets().size(); ++i)
    if (seconds <= Buckets()[i]) {
      ++h.counts[i];
      break;
    }
  h.sum += seconds;
  ++h.n;
}

std::string Metrics::Render(const std::string& gauges) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, series] : counters_) {
    out += "# HELP " + name + " " + Help(name) + "\n# TYPE " + name + " counter\n";
    for (const auto& [labels, v] : series) out += name + (labels.empty() ? "" : "{" + labels + "}") + " " + Num(v) + "\n";
  }
  for (const auto& [name, series] : histograms_) {
    out += "# HELP " + name + " " + Help(name) + "\n# TYPE " + name + " histogram\n";
    for (const auto& [labels, h] : series) {
      const std::string sep = labels.empty() ? "" : labels + ",";
      uint64_t cum = 0;
      for (size_t i = 0; i < Buckets().size(); ++i) {
        cum += h.counts[i];
        out += name + "_bucket{" + sep + "le=\"" + Num(Buckets()[i]) + "\"} " + std::to_string(cum) + "\n";
      }
      out += name + "_bucket{" + sep + "le=\"+Inf\"} " + std::to_string(h.n) + "\n";
      const std::string l = labels.empty() ? "" : "{" + labels + "}";
      out += name + "_sum" + l + " " + Num(h.sum) + "\n";
      out += name + "_count" + l + " " + std::to_string(h.n) + "\n";
    }
  }
  return out + gauges;
}

}  // namespace strata::serve
