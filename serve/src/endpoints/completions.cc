// POST /v1/completions: OpenAI's (legacy) text completions.
#include "../state.h"

namespace strata::serve {

Endpoint CompletionsEndpoint() {
  Endpoint e;
  e.method = "POST";
  e.path = "/v1/completions";
  e.handle = [](ServerState& st, const HttpRequest& q, const std::shared_ptr<Responder>& r) {
    Generate(st, q, r, ApiKind::kCompletions);
  };
  return e;
}

}  // namespace strata::serve
