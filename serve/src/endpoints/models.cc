// GET /v1/models: OpenAI's model list; each entry adds its layers and its
// weight bytes: distinct, and shared with another served variant.
#include "../state.h"

namespace strata::serve {

Endpoint ModelsEndpoint() {
  Endpoint e;
  e.method = "GET";
  e.path = "/v1/models";
  e.handle = [](ServerState& st, const HttpRequest&, const std::shared_ptr<Responder>& r) {
    OJson data = OJson::array();
    for (const auto& m : st.models)
      data.push_back({{"id", m->name},
                      {"object", "model"},
                      {"created", m->created},
                      {"owned_by", "strata"},
                      {"variant", m->variant.Hex()},
                      {"layers", m->layers},
                      {"distinct_layers", m->distinct_layers},
                      {"distinct_bytes", m->distinct_bytes},
                      {"shared_bytes", m->shared_bytes},
                      {"context_length", std::min(st.ctx, m->engine->max_context())},
                      {"chat", m->chat.has_value()}});
    SendJson(r, 200, OJson{{"object", "list"}, {"data", data}});
  };
  return e;
}

}  // namespace strata::serve
