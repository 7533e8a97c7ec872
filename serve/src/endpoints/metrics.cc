// GET /metrics: Prometheus text format (docs/serve.md, "Metrics").
#include "../state.h"

namespace strata::serve {

namespace {

std::string Gauge(const std::string& name, const std::string& help, const std::vector<std::pair<std::string, double>>& series) {
  std::string out = "# HELP " + name + " " + help + "\n# TYPE " + name + " gauge\n";
  char buf[64];
  for (const auto& [labels, v] : series) {
    snprintf(buf, sizeof buf, " %.17g\n", v);
    out += name + (labels.empty() ? "" : "{" + labels + "}") + buf;
  }
  return out;
}

}  // namespace

Endpoint MetricsEndpoint() {
  Endpoint e;
  e.method = "GET";
  e.path = "/metrics";
  e.needs_ready = false;
  e.handle = [](ServerState& st, const HttpRequest&, const std::shared_ptr<Responder>& r) {
    std::string g;
    const bool ready = st.phase.load() == Phase::kReady;
    g += Gauge("strata_models_loaded", "models loaded and served", {{"", ready ? static_cast<double>(st.models.size()) : 0.0}});
    if (ready) {
      const SchedulerStats s = st.scheduler->stats();
      g += Gauge("strata_queue_depth", "requests waiting for admission", {{"", s.queued}});
      g += Gauge("strata_active_sequences", "sequences in the running batch", {{"", s.active}});
      std::vector<std::pair<std::string, double>> used, free_, peak, peak_bytes, seqs;
      uint64_t distinct = 0;
      for (size_t i = 0; i < st.models.size(); ++i) {
        const std::string l = Metrics::Label("model", st.models[i]->name);
        used.emplace_back(l, static_cast<double>(s.models[i].kv.used_blocks));
        free_.emplace_back(l, static_cast<double>(s.models[i].kv.free_blocks()));
        peak.emplace_back(l, static_cast<double>(s.models[i].kv.peak_used_blocks));
        peak_bytes.emplace_back(l, static_cast<double>(s.models[i].kv.peak_used_blocks) * s.models[i].kv.block_bytes);
        seqs.emplace_back(l, s.models[i].active);
        distinct += st.models[i]->distinct_bytes;
      }
      g += Gauge("strata_kv_blocks_used", "KV cache blocks held by sequences", used);
      g += Gauge("strata_kv_blocks_free", "KV cache blocks free in the model's pool", free_);
      g += Gauge("strata_kv_blocks_peak", "the most KV blocks the model's sequences held at once", peak);
      g += Gauge("strata_kv_peak_bytes", "bytes of those blocks: the KV memory the model has touched (CPU)", peak_bytes);
      g += Gauge("strata_model_active_sequences", "running sequences by model", seqs);
      g += Gauge("strata_kv_reserved_bytes", "KV bytes reserved by admitted requests", {{"", static_cast<double>(s.kv_reserved_bytes)}});
      g += Gauge("strata_kv_budget_bytes", "the KV budget (--kv-memory)", {{"", static_cast<double>(s.kv_budget_bytes)}});
      const uint64_t resident = st.pool->resident_bytes();
      g += Gauge("strata_weight_resident_bytes", "weight bytes resident in the shared pool", {{"", static_cast<double>(resident)}});
      g += Gauge("strata_weight_shared_saved_bytes",
                 "the served models' distinct weight bytes summed, minus the pool's: what sharing saves",
                 {{"", static_cast<double>(distinct > resident ? distinct - resident : 0)}});
    }
    Reply rep;
    rep.content_type = "text/plain; version=0.0.4; charset=utf-8";
    rep.body = st.metrics.Render(g);
    r->Send(std::move(rep));
  };
  return e;
}

}  // namespace strata::serve
