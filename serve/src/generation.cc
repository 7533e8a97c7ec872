// /v1/completions and /v1/chat/completions: a request becomes one scheduler
// request per prompt (choice); tokens come back on the scheduler's thread and
// are turned into text, matched against stop strings and sent as server-sent
// events or one JSON body (docs/serve.md).
#include <random>

#include "state.h"
#include "strata/runtime/jinja.h"

namespace strata::serve {

namespace {

using Clock = std::chrono::steady_clock;

double Secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

std::string RandomId(const char* prefix) {
  static thread_local std::mt19937_64 rng(std::random_device{}());
  static const char* hex = "0123456789abcdef";
  std::string s = prefix;
  for (int i = 0; i < 24; ++i) s += hex[rng() & 15];
  return s;
}

// A token's bytes as the API's "token" string: as they are when they are
// valid UTF-8, else (a byte-fallback token holding part of a character)
// every byte past ASCII written \xNN, as OpenAI writes such tokens.
std::string TokenString(const std::string& b) {
  bool valid = true;
  try {
    (void)OJson(b).dump();
  } catch (const std::exception&) {
    valid = false;
  }
  if (valid) return b;
  std::string out;
  char buf[8];
  for (unsigned char c : b) {
    if (c < 0x80) out += static_cast<char>(c);
    else snprintf(buf, sizeof buf, "\\x%02x", c), out += buf;
  }
  return out;
}

OJson Bytes(const std::string& s) {
  OJson a = OJson::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

struct Choice {
  int index = 0;
  std::vector<int> prompt;
  std::shared_ptr<RequestHandle> handle;
  std::unique_ptr<StreamDecoder> decoder;
  std::string text;  // everything emitted (non-streaming: the answer)
  std::string held;  // decoded text that may begin a stop string
  bool stopped_by_string = false;
  const char* finish = nullptr;
  int64_t completion_tokens = 0;
  Clock::time_point last_token;
  // logprobs, as the API shapes them
  OJson chat_logprobs = OJson::array();
  OJson tokens = OJson::array(), token_logprobs = OJson::array(), top_logprobs = OJson::array(),
        text_offset = OJson::array();
};

// One HTTP request's generation: its choices and how they are answered.
class Job : public std::enable_shared_from_this<Job> {
 public:
  Job(ServerState& st, ServedModel& m, ParsedRequest req, std::shared_ptr<Responder> r, Clock::time_point t0)
      : st_(st), m_(m), req_(std::move(req)), r_(std::move(r)), t0_(t0),
        id_(RandomId(req_.kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-")), created_(static_cast<int64_t>(time(nullptr))),
        model_label_(Metrics::Label("model", m.name)) {}

  std::vector<Choice> choices;

  // Submits every choice; answers an error (and cancels what was accepted)
  // when one is refused.
  void Start(int64_t max_tokens) {
    auto self = shared_from_this();
    const std::vector<int>& stop_ids =
        req_.ignore_eos ? std::vector<int>{} : (req_.kind == ApiKind::kChat ? m_.chat_stop_ids : m_.stop_ids);
    const int model_index = ModelIndex();
    for (Choice& c : choices) {
      GenerationRequest g;
      g.model = model_index;
      g.prompt = c.prompt;
      g.max_tokens = max_tokens;
      g.sampler = req_.sampler;
      g.stop_ids = stop_ids;
      g.logprobs = req_.logprobs;
      g.deadline = t0_ + std::chrono::microseconds(static_cast<int64_t>(st_.opts.timeout_s * 1e6));
      Choice* cp = &c;
      g.on_token = [self, cp](const TokenEvent& ev) { return self->OnToken(*cp, ev); };
      g.on_done = [self, cp](const RequestResult& res) { self->OnDone(*cp, res); };
      Scheduler::Admission a = st_.scheduler->Submit(std::move(g));
      if (a.verdict != Scheduler::Verdict::kAccepted) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          aborted_ = true;
        }
        for (Choice& d : choices)
          if (d.handle) d.handle->Cancel();
        ApiError e(400, a.message);
        if (a.verdict == Scheduler::Verdict::kQueueFull) {
          e = ApiError(429, a.message, "rate_limit_error", "", "queue_full");
          e.retry_after_s = a.retry_after_s;
        } else if (a.verdict == Scheduler::Verdict::kStopping) {
          e = ApiError(503, a.message, "unavailable_error");
        } else if (a.verdict == Scheduler::Verdict::kTooLarge) {
          e = ApiError(400, a.message, "invalid_request_error", "max_tokens", "context_length_exceeded");
        }
        SendError(r_, e);
        return;
      }
      c.handle = a.handle;
    }
    std::weak_ptr<Job> weak = self;
    r_->OnCancel([weak] {
      if (auto j = weak.lock())
        for (Choice& c : j->choices)
          if (c.handle) c.handle->Cancel();
    });
    std::lock_guard<std::mutex> lock(mu_);
    started_ = true;
    if (req_.stream) {
      r_->StartStream();
      if (req_.kind == ApiKind::kChat)
        for (const Choice& c : choices)
          r_->Event(Chunk(c, OJson{{"role", "assistant"}, {"content", ""}}, nullptr, OJson()).dump(-1, ' ', false, OJson::error_handler_t::replace));
    }
    for (std::string& e : pending_) r_->Event(e);
    pending_.clear();
    if (finished_) Finish();
  }

 private:
  int ModelIndex() const {
    for (size_t i = 0; i < st_.models.size(); ++i)
      if (st_.models[i].get() == &m_) return static_cast<int>(i);
    return -1;
  }

  const Tokenizer& tok() const { return m_.tok->tokenizer; }

  OJson Chunk(const Choice& c, const OJson& delta_or_text, const char* finish, const OJson& logprobs) const {
    OJson ch;
    ch["index"] = c.index;
    if (req_.kind == ApiKind::kChat) {
      ch["delta"] = delta_or_text;
      ch["logprobs"] = logprobs;
    } else {
      ch["text"] = delta_or_text;
      ch["logprobs"] = logprobs;
    }
    ch["finish_reason"] = finish ? OJson(finish) : OJson();
    OJson j = {{"id", id_},
               {"object", req_.kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
               {"created", created_},
               {"model", m_.name},
               {"choices", OJson::array({ch})}};
    if (req_.include_usage) j["usage"] = nullptr;
    return j;
  }

  // Called with the job's lock held.
  void Send(const std::string& event) {
    if (!started_) pending_.push_back(event);
    else r_->Event(event);
  }

  // Text that is final (no stop string can start in it) for choice `c`,
  // with the logprobs of the token that produced it.
  void Emit(Choice& c, const std::string& piece, const OJson& lp_chat, const OJson& lp_cmpl) {
    const size_t offset = c.text.size();
    c.text += piece;
    if (!req_.stream) return;
    if (piece.empty() && lp_chat.is_null() && lp_cmpl.is_null()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return;
    OJson lp;
    if (req_.kind == ApiKind::kChat && !lp_chat.is_null()) lp = OJson{{"content", OJson::array({lp_chat})}};
    if (req_.kind == ApiKind::kCompletions && !lp_cmpl.is_null()) {
      lp = lp_cmpl;
      lp["text_offset"] = OJson::array({offset});
    }
    Send(Chunk(c, req_.kind == ApiKind::kChat ? OJson{{"content", piece}} : OJson(piece), nullptr, lp).dump(-1, ' ', false, OJson::error_handler_t::replace));
  }

  bool OnToken(Choice& c, const TokenEvent& ev) {
    const auto now = Clock::now();
    if (c.completion_tokens == 0) st_.metrics.Observe("strata_time_to_first_token_seconds", model_label_, Secs(t0_, now));
    else st_.metrics.Observe("strata_inter_token_latency_seconds", model_label_, Secs(c.last_token, now));
    c.last_token = now;
    ++c.completion_tokens;
    if (c.completion_tokens == 1) ttft_s_ = Secs(t0_, now);
    OJson lp_chat, lp_cmpl;
    if (req_.logprobs >= 0) {
      const std::string tb(tok().TokenBytes(ev.token)), t = TokenString(tb);
      if (req_.kind == ApiKind::kChat) {
        OJson top = OJson::array();
        for (const TokenLogprob& a : ev.top) {
          const std::string ab(tok().TokenBytes(a.token));
          top.push_back({{"token", TokenString(ab)}, {"logprob", a.logprob}, {"bytes", Bytes(ab)}});
        }
        lp_chat = {{"token", t}, {"logprob", ev.logprob}, {"bytes", Bytes(tb)}, {"top_logprobs", top}};
        c.chat_logprobs.push_back(lp_chat);
      } else {
        OJson top = OJson::object();
        for (const TokenLogprob& a : ev.top) top[TokenString(std::string(tok().TokenBytes(a.token)))] = a.logprob;
        c.tokens.push_back(t);
        c.token_logprobs.push_back(ev.logprob);
        c.top_logprobs.push_back(top);
        c.text_offset.push_back(c.text.size() + c.held.size());
        lp_cmpl = {{"tokens", OJson::array({t})},
                   {"token_logprobs", OJson::array({ev.logprob})},
                   {"top_logprobs", OJson::array({top})}};
      }
    }
    const std::string piece = c.decoder->Push(ev.token);
    if (req_.stop.empty()) {
      Emit(c, piece, lp_chat, lp_cmpl);
      return true;
    }
    c.held += piece;
    size_t best = std::string::npos;
    for (const std::string& s : req_.stop) best = std::min(best, c.held.find(s));
    if (best != std::string::npos) {
      Emit(c, c.held.substr(0, best), lp_chat, lp_cmpl);
      c.held.clear();
      c.stopped_by_string = true;
      return false;
    }
    // Hold back the longest tail that could begin a stop string.
    size_t keep = 0;
    for (const std::string& s : req_.stop)
      for (size_t n = std::min(s.size() - 1, c.held.size()); n > keep; --n)
        if (c.held.compare(c.held.size() - n, n, s, 0, n) == 0) {
          keep = n;
          break;
        }
    Emit(c, c.held.substr(0, c.held.size() - keep), lp_chat, lp_cmpl);
    c.held.erase(0, c.held.size() - keep);
    return true;
  }

  void OnDone(Choice& c, const RequestResult& res) {
    if (!c.stopped_by_string && (res.reason == FinishReason::kStop || res.reason == FinishReason::kLength)) {
      std::string rest = c.held + c.decoder->Finish();
      c.held.clear();
      if (!rest.empty()) Emit(c, rest, OJson(), OJson());
    }
    st_.metrics.Add("strata_prompt_tokens_total", model_label_, static_cast<double>(res.prompt_tokens));
    st_.metrics.Add("strata_completion_tokens_total", model_label_, static_cast<double>(res.completion_tokens));
    st_.metrics.Observe("strata_request_duration_seconds", model_label_, Secs(t0_, Clock::now()));
    std::lock_guard<std::mutex> lock(mu_);
    prompt_tokens_ += res.prompt_tokens;
    completion_tokens_ += res.completion_tokens;
    switch (res.reason) {
      case FinishReason::kStop: c.finish = "stop"; break;
      case FinishReason::kLength: c.finish = "length"; break;
      case FinishReason::kCancelled: error_ = std::make_unique<ApiError>(499, "the client closed the connection", "cancelled"); break;
      case FinishReason::kTimeout:
        error_ = std::make_unique<ApiError>(504, "the request ran past the server's --timeout of " +
                                                     std::to_string(static_cast<int64_t>(st_.opts.timeout_s)) + " s",
                                            "timeout_error");
        break;
      case FinishReason::kShutdown: error_ = std::make_unique<ApiError>(503, "the server is shutting down", "unavailable_error"); break;
      case FinishReason::kError: error_ = std::make_unique<ApiError>(500, "generation failed: " + res.error, "server_error"); break;
    }
    if (aborted_) return;
    if (req_.stream && c.finish) {
      OJson lp;
      Send(Chunk(c, req_.kind == ApiKind::kChat ? OJson::object() : OJson(""), c.finish, lp).dump(-1, ' ', false, OJson::error_handler_t::replace));
    }
    if (++done_ < static_cast<int>(choices.size())) return;
    finished_ = true;
    if (started_) Finish();
  }

  OJson Usage() const {
    return {{"prompt_tokens", prompt_tokens_},
            {"completion_tokens", completion_tokens_},
            {"total_tokens", prompt_tokens_ + completion_tokens_}};
  }

  // Every choice has ended; the lock is held.
  void Finish() {
    r_->Note(m_.name, prompt_tokens_, completion_tokens_, ttft_s_);
    if (req_.stream) {
      if (error_) r_->Event(error_->Body());
      else if (req_.include_usage)
        r_->Event(OJson{{"id", id_},
                        {"object", req_.kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
                        {"created", created_},
                        {"model", m_.name},
                        {"choices", OJson::array()},
                        {"usage", Usage()}}
                      .dump(-1, ' ', false, OJson::error_handler_t::replace));
      r_->EndStream(error_ ? error_->status : 200);
      return;
    }
    if (error_) {
      SendError(r_, *error_);
      return;
    }
    OJson out = OJson::array();
    for (const Choice& c : choices) {
      OJson ch;
      ch["index"] = c.index;
      if (req_.kind == ApiKind::kChat) {
        ch["message"] = {{"role", "assistant"}, {"content", c.text}};
        ch["logprobs"] = req_.logprobs >= 0 ? OJson{{"content", c.chat_logprobs}} : OJson();
      } else {
        ch["text"] = c.text;
        ch["logprobs"] = req_.logprobs >= 0 ? OJson{{"tokens", c.tokens},
                                                     {"token_logprobs", c.token_logprobs},
                                                     {"top_logprobs", c.top_logprobs},
                                                     {"text_offset", c.text_offset}}
                                            : OJson();
      }
      ch["finish_reason"] = c.finish ? OJson(c.finish) : OJson();
      out.push_back(ch);
    }
    SendJson(r_, 200,
             OJson{{"id", id_},
                   {"object", req_.kind == ApiKind::kChat ? "chat.completion" : "text_completion"},
                   {"created", created_},
                   {"model", m_.name},
                   {"choices", out},
                   {"usage", Usage()}});
  }

  ServerState& st_;
  ServedModel& m_;
  ParsedRequest req_;
  std::shared_ptr<Responder> r_;
  Clock::time_point t0_;
  std::string id_;
  int64_t created_;
  std::string model_label_;
  std::mutex mu_;
  bool started_ = false, finished_ = false, aborted_ = false;
  std::vector<std::string> pending_;
  int done_ = 0;
  int64_t prompt_tokens_ = 0, completion_tokens_ = 0;
  double ttft_s_ = 0;
  std::unique_ptr<ApiError> error_;
};

ApiError ContextError(const std::string& msg) {
  return ApiError(400, msg, "invalid_request_error", "max_tokens", "context_length_exceeded");
}

}  // namespace

void Generate(ServerState& st, const HttpRequest& http, const std::shared_ptr<Responder>& r, ApiKind kind) {
  ParsedRequest req = ParseRequest(http.body, kind);  // throws ApiError
  ServedModel* m = st.Find(req.model);
  if (!m) {
    std::string names;
    for (const auto& s : st.models) names += (names.empty() ? "" : ", ") + s->name;
    throw ApiError(404, "the model '" + req.model + "' does not exist on this server; it serves: " + names,
                   "invalid_request_error", "model", "model_not_found");
  }
  if (!m->tok)
    throw ApiError(400, "model '" + m->name + "' has no tokenizer (no tokenizer.json among its files): its output "
                   "cannot be turned into text; use `strata run --tokens` for it");
  std::vector<std::vector<int>> prompts;
  if (kind == ApiKind::kChat) {
    if (!m->chat) throw ApiError(400, "model '" + m->name + "' cannot chat: " + m->chat_problem, "invalid_request_error", "messages");
    std::string text;
    try {
      text = RenderChat(*m->chat, req.messages, /*add_generation_prompt=*/true, req.tools, OJson::object());
    } catch (const jinja::TemplateError& e) {
      throw ApiError(400, std::string("the chat template of '") + m->name + "' raised: " + e.what(),
                     "invalid_request_error", "messages", "template_error");
    }
    prompts.push_back(m->tok->tokenizer.Encode(text, /*parse_special=*/true));
  } else {
    for (const std::string& t : req.prompt_texts) prompts.push_back(m->tok->tokenizer.EncodePrompt(t));
    const int64_t vocab = m->engine->config().vocab;
    for (const auto& ids : req.prompt_ids) {
      for (int id : ids)
        if (id >= vocab)
          throw ApiError(400, "token id " + std::to_string(id) + " is outside the vocabulary of '" + m->name + "' (0.." +
                                  std::to_string(vocab - 1) + ")",
                         "invalid_request_error", "prompt");
      prompts.push_back(ids);
    }
  }
  int64_t longest = 0;
  for (const auto& p : prompts) {
    if (p.empty()) throw ApiError(400, "the prompt is empty after tokenization and the tokenizer adds no BOS", "invalid_request_error", "prompt");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
  }
  const int64_t ctx = std::min(st.ctx, m->engine->max_context());
  if (longest >= ctx)
    throw ContextError("the prompt has " + std::to_string(longest) + " tokens and this server's context is " +
                       std::to_string(ctx) + " (--ctx): no room to generate");
  const int64_t max_tokens = req.max_tokens.value_or(ctx - longest);
  if (longest + max_tokens > ctx)
    throw ContextError("the prompt's " + std::to_string(longest) + " tokens plus max_tokens " + std::to_string(max_tokens) +
                       " come to " + std::to_string(longest + max_tokens) + ", past this server's context of " +
                       std::to_string(ctx) + " (--ctx); ask for at most " + std::to_string(ctx - longest) + " tokens");
  if (!req.seed_given) req.sampler.seed = std::random_device{}();
  auto job = std::make_shared<Job>(st, *m, std::move(req), r, http.received);
  job->choices.resize(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    job->choices[i].index = static_cast<int>(i);
    job->choices[i].prompt = std::move(prompts[i]);
    job->choices[i].decoder = std::make_unique<StreamDecoder>(m->tok->tokenizer);
  }
  job->Start(max_tokens);
}

}  // namespace strata::serve
