// POST /v1/chat/completions: OpenAI's chat completions, the prompt rendered
// by the model's own Jinja chat_template.
#include "../state.h"

namespace strata::serve {

Endpoint ChatCompletionsEndpoint() {
  Endpoint e;
  e.method = "POST";
  e.path = "/v1/chat/completions";
  e.handle = [](ServerState& st, const HttpRequest& q, const std::shared_ptr<Responder>& r) {
    Generate(st, q, r, ApiKind::kChat);
  };
  return e;
}

}  // namespace strata::serve
