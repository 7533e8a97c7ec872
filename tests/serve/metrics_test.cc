// Metrics::Render against the Prometheus text exposition format: HELP and TYPE
// lines, counters with labels, cumulative histogram buckets ending in +Inf,
// _sum and _count, and label escaping.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>
#include <thread>
#include <vector>

#include "strata/serve/metrics.h"

namespace strata::serve {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, EmptyRendersOnlyTheGauges) {
  Metrics m;
  EXPECT_EQ(m.Render(""), "");
  EXPECT_EQ(m.Render("# TYPE strata_queue_depth gauge\nstrata_queue_depth 3\n"),
            "# TYPE strata_queue_depth gauge\nstrata_queue_depth 3\n");
}

TEST(Metrics, CountersWithLabels) {
  Metrics m;
  const std::string ok = Metrics::Label("endpoint", "/v1/models") + "," + Metrics::Label("status", "200");
  m.Add("strata_requests_total", ok);
  m.Add("strata_requests_total", ok);
  m.Add("strata_requests_total", Metrics::Label("endpoint", "/health") + "," + Metrics::Label("status", "503"));
  m.Add("strata_completion_tokens_total", Metrics::Label("model", "base"), 1234567);
  m.Add("strata_completion_tokens_total", Metrics::Label("model", "base"), 0.5);
  EXPECT_EQ(m.Render("g 1\n"),
            "# HELP strata_completion_tokens_total tokens generated\n"
            "# TYPE strata_completion_tokens_total counter\n"
            "strata_completion_tokens_total{model=\"base\"} 1234567.5\n"
            "# HELP strata_requests_total HTTP requests answered, by endpoint and status\n"
            "# TYPE strata_requests_total counter\n"
            "strata_requests_total{endpoint=\"/health\",status=\"503\"} 1\n"
            "strata_requests_total{endpoint=\"/v1/models\",status=\"200\"} 2\n"
            "g 1\n");
}

TEST(Metrics, CounterWithoutLabels) {
  Metrics m;
  m.Add("x_total", "", 3);
  EXPECT_EQ(m.Render(""), "# HELP x_total strata metric\n# TYPE x_total counter\nx_total 3\n");
}

TEST(Metrics, HistogramBucketsAreCumulativeAndEndInInf) {
  Metrics m;
  const std::string l = Metrics::Label("model", "a");
  // Exactly representable values: 2^-8, 3/16, a bucket's own bound (le is <=), one past the last bound.
  for (double s : {0.00390625, 0.1875, 0.5, 100.0}) m.Observe("strata_request_duration_seconds", l, s);
  EXPECT_EQ(m.Render(""),
            "# HELP strata_request_duration_seconds generation request received to last token\n"
            "# TYPE strata_request_duration_seconds histogram\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.001\"} 0\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.0025\"} 0\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.005\"} 1\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.01\"} 1\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.025\"} 1\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.05\"} 1\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.1\"} 1\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.25\"} 2\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"0.5\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"1\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"2.5\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"5\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"10\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"30\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"60\"} 3\n"
            "strata_request_duration_seconds_bucket{model=\"a\",le=\"+Inf\"} 4\n"
            "strata_request_duration_seconds_sum{model=\"a\"} 100.69140625\n"
            "strata_request_duration_seconds_count{model=\"a\"} 4\n");
}

TEST(Metrics, HistogramWithoutLabels) {
  Metrics m;
  m.Observe("h_seconds", "", 2);
  const std::string out = m.Render("");
  EXPECT_THAT(out, HasSubstr("# TYPE h_seconds histogram\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_bucket{le=\"1\"} 0\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_bucket{le=\"2.5\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_bucket{le=\"+Inf\"} 1\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_sum 2\nh_seconds_count 1\n"));
}

// Every histogram series: bucket counts never decrease, +Inf equals _count,
// HELP and TYPE come once per family before its samples.
TEST(Metrics, HistogramInvariantsOverManyObservations) {
  Metrics m;
  for (int i = 0; i < 1000; ++i) {
    m.Observe("strata_inter_token_latency_seconds", Metrics::Label("model", i % 2 ? "a" : "b"), i * 0.0997);
    m.Observe("strata_time_to_first_token_seconds", Metrics::Label("model", "a"), 1.0 / (i + 1));
  }
  std::istringstream in(m.Render(""));
  std::string line, series;
  long last = -1, buckets = 0, help = 0, type = 0, series_seen = 0;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) ++help;
    if (line.rfind("# TYPE ", 0) == 0) ++type;
    if (line[0] == '#') continue;
    const size_t brace = line.find('{');
    const std::string name = line.substr(0, brace);
    const long v = std::stol(line.substr(line.rfind(' ') + 1));
    const std::string labels = line.substr(brace, line.find(",le=") - brace);
    if (name.size() > 7 && name.substr(name.size() - 7) == "_bucket") {
      if (labels != series) series = labels, last = -1, ++series_seen;
      EXPECT_GE(v, last) << line;
      last = v;
      ++buckets;
      if (line.find("le=\"+Inf\"") != std::string::npos) {
        EXPECT_EQ(v, 500 + (series_seen == 3 ? 500 : 0)) << line;  // the a series of time_to_first_token has 1000
      }
    } else if (name.size() > 6 && name.substr(name.size() - 6) == "_count") {
      EXPECT_EQ(v, last) << line;
    }
  }
  EXPECT_EQ(help, 2);
  EXPECT_EQ(type, 2);
  EXPECT_EQ(series_seen, 3);
  EXPECT_EQ(buckets, 3 * 16);
}

TEST(Metrics, LabelEscaping) {
  EXPECT_EQ(Metrics::Label("model", "plain"), "model=\"plain\"");
  EXPECT_EQ(Metrics::Label("model", "a\"b"), "model=\"a\\\"b\"");
  EXPECT_EQ(Metrics::Label("model", "c:\\dir"), "model=\"c:\\\\dir\"");
  EXPECT_EQ(Metrics::Label("model", "two\nlines"), "model=\"two\\nlines\"");
  EXPECT_EQ(Metrics::Label("model", "\\\"\n"), "model=\"\\\\\\\"\\n\"");
  EXPECT_EQ(Metrics::Label("model", ""), "model=\"\"");
  Metrics m;
  m.Add("c_total", Metrics::Label("model", "x\"y"));
  EXPECT_THAT(m.Render(""), HasSubstr("\nc_total{model=\"x\\\"y\"} 1\n"));
}

TEST(Metrics, ConcurrentAddsAreAllCounted) {
  Metrics m;
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        m.Add("c_total", "");
        m.Observe("h_seconds", "", 0.001);
      }
    });
  for (auto& t : ts) t.join();
  const std::string out = m.Render("");
  EXPECT_THAT(out, HasSubstr("\nc_total 4000\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_bucket{le=\"0.001\"} 4000\n"));
  EXPECT_THAT(out, HasSubstr("\nh_seconds_count 4000\n"));
}

}  // namespace
}  // namespace strata::serve
