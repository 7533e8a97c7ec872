// Prometheus metrics of the server (docs/serve.md, "Metrics"): counters and
// histograms by label, rendered in the text exposition format.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace strata::serve {

class Metrics {
 public:
  // `labels` is the label set as Prometheus writes it: endpoint="/v1/models",status="200".
  void Add(const std::string& name, const std::string& labels, double v = 1);
  void Observe(const std::string& name, const std::string& labels, double seconds);
  // Counters and histograms, with HELP and TYPE lines; `gauges` are appended
  // as they are (the server computes them when scraped).
  std::string Render(const std::string& gauges) const;

  // Quotes a label value as the exposition format wants.
  static std::string Label(const std::string& key, const std::string& value);

 private:
  struct Histogram {
    std::vector<uint64_t> counts;  // per bucket, cumulative when rendered
    double sum = 0;
    uint64_t n = 0;
  };
  mutable std::mutex mu_;
  std::map<std::string, std::map<std::string, double>> counters_;
  std::map<std::string, std::map<std::string, Histogram>> histograms_;
};

}  // namespace strata::serve
