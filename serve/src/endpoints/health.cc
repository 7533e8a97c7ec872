// GET /health: 200 when every model is loaded, 503 with an error body while
// loading or shutting down (no API key needed: for load balancers).
#include "../state.h"

namespace strata::serve {

Endpoint HealthEndpoint() {
  Endpoint e;
  e.method = "GET";
  e.path = "/health";
  e.needs_ready = false;
  e.needs_auth = false;
  e.handle = [](ServerState& st, const HttpRequest&, const std::shared_ptr<Responder>& r) {
    switch (st.phase.load()) {
      case Phase::kReady: return SendJson(r, 200, OJson{{"status", "ok"}});
      case Phase::kLoading: return SendError(r, ApiError(503, "loading: " + st.Status(), "unavailable_error", "", "loading"));
      case Phase::kStopping: return SendError(r, ApiError(503, "shutting down", "unavailable_error", "", "shutting_down"));
    }
  };
  return e;
}

}  // namespace strata::serve
