// The HTTP side of `strata serve` (docs/serve.md): Boost.Beast parses
// requests (with body and header limits), each connection is a session on a
// strand, and answers are written as they come: one body, or server-sent
// events in chunked transfer. Loading, shutdown and the request log are here.
#include <utility>  // before Asio: Boost 1.74 uses std::exchange without including it

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <thread>

#include "state.h"
#include "strata/formats/error.h"
#include "strata/formats/variant.h"
#include "strata/formats/variant_check.h"

namespace strata::serve {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

ServedModel* ServerState::Find(const std::string& name) const {
  for (const auto& m : models)
    if (m->name == name) return m.get();
  return nullptr;
}

std::string ServerState::Status() const {
  std::lock_guard<std::mutex> lock(status_mu);
  return status;
}

void SendJson(const std::shared_ptr<Responder>& r, int status, const OJson& body) {
  Reply rep;
  rep.status = status;
  rep.body = body.dump(-1, ' ', false, OJson::error_handler_t::replace);
  r->Send(std::move(rep));
}

void SendError(const std::shared_ptr<Responder>& r, const ApiError& e) {
  Reply rep;
  rep.status = e.status;
  rep.body = e.Body();
  if (e.retry_after_s > 0) rep.headers.emplace_back("Retry-After", std::to_string(static_cast<int>(e.retry_after_s + 0.999)));
  r->Send(std::move(rep));
}

namespace {

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 429: return "Too Many Requests";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
  }
  return "Unknown";
}

// Equal strings in time that depends only on their lengths.
bool ConstantTimeEqual(const std::string& a, const std::string& b) {
  unsigned diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

std::string Now() {
  char buf[40];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &t);
  snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return buf;
}

}  // namespace

struct Server::Impl {
  Store& store;
  ServerState st;
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::signal_set signals{ioc, SIGINT, SIGTERM};
  std::vector<Endpoint> endpoints;
  std::vector<std::string> names;
  std::atomic<int> busy{0};  // exchanges in flight
  std::atomic<bool> stop_requested{false};
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  std::mutex log_mu;

  Impl(Store& s, const ServeOptions& o) : store(s) { st.opts = o; }

  void Log(const HttpRequest& q, int status, const std::string& model, int64_t pt, int64_t ct, double ttft) {
    const double latency = std::chrono::duration<double>(Clock::now() - q.received).count();
    st.metrics.Add("strata_requests_total", Metrics::Label("endpoint", KnownPath(q.path)) + "," +
                                                Metrics::Label("status", std::to_string(status)));
    std::string line;
    if (st.opts.json_logs) {
      OJson j = {{"time", Now()}, {"method", q.method}, {"path", q.path}, {"status", status}, {"latency_s", latency}};
      if (!model.empty()) {
        j["model"] = model;
        j["prompt_tokens"] = pt;
        j["completion_tokens"] = ct;
        j["ttft_s"] = ttft;
      }
      line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      char buf[256];
      line = Now() + " " + q.method + " " + q.path + " " + std::to_string(status);
      if (!model.empty()) {
        snprintf(buf, sizeof buf, " model=%s prompt_tokens=%lld completion_tokens=%lld ttft=%.3fs", model.c_str(),
                 static_cast<long long>(pt), static_cast<long long>(ct), ttft);
        line += buf;
      }
      snprintf(buf, sizeof buf, " latency=%.3fs", latency);
      line += buf;
    }
    std::lock_guard<std::mutex> lock(log_mu);
    fprintf(stderr, "%s\n", line.c_str());
  }

  std::string KnownPath(const std::string& path) const {
    for (const Endpoint& e : endpoints)
      if (e.path == path) return path;
    return "other";
  }

  void Accept();
  void Load();
  void BeginStop();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket s, Server::Impl& srv) : stream_(std::move(s)), srv_(srv) {}
  void Start() { DoRead(); }

  // --- called through the strand (post) by the Responder ---
  void Send(Reply r) {
    if (exchange_ended_) return;
    std::string head = "HTTP/1.1 " + std::to_string(r.status) + " " + Reason(r.status) + "\r\n";
    head += "Content-Type: " + r.content_type + "\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n";
    for (const auto& [k, v] : r.headers) head += k + ": " + v + "\r\n";
    head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
    status_ = r.status;
    Queue(head + r.body);
    EndExchange();
  }
  void StartStream() {
    if (exchange_ended_ || streaming_) return;
    streaming_ = true;
    status_ = 200;
    Queue(std::string("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                      "Transfer-Encoding: chunked\r\n") +
          (keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"));
  }
  void Event(const std::string& json) {
    if (exchange_ended_ || !streaming_) return;
    Chunk("data: " + json + "\n\n");
  }
  void EndStream(int log_status) {
    if (exchange_ended_ || !streaming_) return;
    if (!peer_gone_) status_ = log_status;
    Chunk("data: [DONE]\n\n");
    Queue("0\r\n\r\n");
    EndExchange();
  }
  void OnCancel(std::function<void()> f) {
    if (exchange_ended_) return;
    on_cancel_ = std::move(f);
    if (peer_gone_) return Cancelled();
    if (!detecting_) DetectClose();
  }
  void Note(const std::string& model, int64_t pt, int64_t ct, double ttft) {
    model_ = model;
    pt_ = pt;
    ct_ = ct;
    ttft_ = ttft;
  }
  net::any_io_executor executor() { return stream_.get_executor(); }

 private:
  void DoRead() {
    parser_.emplace();
    parser_->body_limit(srv_.st.opts.max_body);
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(120));  // an idle keep-alive connection
    http::async_read(stream_, buf_, *parser_, beast::bind_front_handler(&Session::OnRead, shared_from_this()));
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  void OnRead(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::operation_aborted ||
        ec == net::error::connection_reset || ec == net::error::eof)
      return Close();
    req_ = HttpRequest{};
    req_.received = Clock::now();
    exchange_ended_ = false;
    streaming_ = false;
    model_.clear();
    pt_ = ct_ = 0;
    ttft_ = 0;
    status_ = 0;
    on_cancel_ = nullptr;
    keep_alive_ = false;
    srv_.busy.fetch_add(1);
    stream_.expires_never();
    if (ec) {
      // The request could not be parsed: answer once and close.
      const bool too_big = ec == http::error::body_limit;
      const bool header_big = ec == http::error::header_limit;
      req_.method = "?";
      req_.path = "?";
      ApiError e = too_big ? ApiError(413, "the request body is larger than the server's limit of " +
                                               std::to_string(srv_.st.opts.max_body) + " bytes (--max-body)",
                                      "invalid_request_error", "", "request_too_large")
                   : header_big ? ApiError(431, "the request's headers are too large")
                                : ApiError(400, "malformed HTTP request: " + ec.message());
      Reply r;
      r.status = e.status;
      r.body = e.Body();
      Send(std::move(r));
      return;
    }
    http::request<http::string_body> msg = parser_->release();
    keep_alive_ = msg.keep_alive() && srv_.st.phase.load() != Phase::kStopping;
    req_.method = std::string(msg.method_string());
    std::string target(msg.target());
    if (size_t q = target.find('?'); q != std::string::npos) {
      req_.query = target.substr(q + 1);
      target.resize(q);
    }
    req_.path = target;
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req_.headers[name] = std::string(f.value());
    }
    req_.body = std::move(msg.body());
    Dispatch();
  }

  void Dispatch();

  void Chunk(const std::string& data) {
    char head[24];
    snprintf(head, sizeof head, "%zx\r\n", data.size());
    Queue(head + data + "\r\n");
  }

  void Queue(std::string bytes) {
    if (peer_gone_) return;
    out_.push_back(std::move(bytes));
    if (!writing_) Write();
  }

  void Write() {
    writing_ = true;
    stream_.expires_after(std::chrono::seconds(60));  // a client that stops reading
    net::async_write(stream_, net::buffer(out_.front()), beast::bind_front_handler(&Session::OnWrite, shared_from_this()));
  }

  void OnWrite(beast::error_code ec, size_t) {
    writing_ = false;
    stream_.expires_never();
    if (ec) {
      out_.clear();
      PeerGone();
      return;
    }
    out_.pop_front();
    if (!out_.empty()) return Write();
    if (exchange_ended_) AfterExchange();
  }

  void EndExchange() {
    exchange_ended_ = true;
    srv_.Log(req_, status_, model_, pt_, ct_, ttft_);
    srv_.busy.fetch_sub(1);
    on_cancel_ = nullptr;
    if (!writing_ && out_.empty()) AfterExchange();
  }

  // The answer is written: the next request, or the end of the connection.
  void AfterExchange() {
    if (peer_gone_ || !keep_alive_ || srv_.st.phase.load() == Phase::kStopping) return Close();
    if (detecting_) {
      // Stop watching; OnDetect starts the next read.
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    DoRead();
  }

  // While a generation runs, a read that notices the client leaving. Bytes
  // that arrive (a pipelined request) are kept for the next read.
  void DetectClose() {
    if (buf_.size() > (1u << 20)) return;  // enough is buffered; the next read takes it
    detecting_ = true;
    stream_.socket().async_read_some(buf_.prepare(4096), beast::bind_front_handler(&Session::OnDetect, shared_from_this()));
  }

  void OnDetect(beast::error_code ec, size_t n) {
    detecting_ = false;
    if (!ec) {
      buf_.commit(n);
      if (!exchange_ended_) return DetectClose();
      if (!writing_ && out_.empty()) AfterExchange();
      return;
    }
    if (ec == net::error::operation_aborted && !peer_gone_) {
      if (exchange_ended_ && !writing_ && out_.empty()) AfterExchange();
      return;
    }
    PeerGone();
  }

  void PeerGone() {
    peer_gone_ = true;
    if (streaming_ && !exchange_ended_) status_ = 499;  // the log says the client left, not the 200 it never got whole
    if (!exchange_ended_) Cancelled();
    else Close();
  }

  void Cancelled() {
    if (on_cancel_) {
      auto f = std::move(on_cancel_);
      on_cancel_ = nullptr;
      f();
    }
  }

  beast::tcp_stream stream_;
  Server::Impl& srv_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  HttpRequest req_;
  std::deque<std::string> out_;
  bool writing_ = false, exchange_ended_ = true, streaming_ = false, keep_alive_ = false;
  bool detecting_ = false, peer_gone_ = false;
  std::function<void()> on_cancel_;
  std::string model_;
  int64_t pt_ = 0, ct_ = 0;
  double ttft_ = 0;
  int status_ = 0;
};

// The endpoint's handle on its session: every call is posted to the
// session's strand, so calls from the scheduler thread keep their order.
class SessionResponder : public Responder {
 public:
  explicit SessionResponder(std::shared_ptr<Session> s) : s_(std::move(s)), ex_(s_->executor()) {}
  void Send(Reply r) override { Post([r = std::move(r)](Session& s) mutable { s.Send(std::move(r)); }); }
  void StartStream() override { Post([](Session& s) { s.StartStream(); }); }
  void Event(const std::string& json) override { Post([json](Session& s) { s.Event(json); }); }
  void EndStream(int log_status) override { Post([log_status](Session& s) { s.EndStream(log_status); }); }
  void OnCancel(std::function<void()> f) override {
    Post([f = std::move(f)](Session& s) mutable { s.OnCancel(std::move(f)); });
  }
  void Note(const std::string& model, int64_t pt, int64_t ct, double ttft) override {
    Post([model, pt, ct, ttft](Session& s) { s.Note(model, pt, ct, ttft); });
  }

 private:
  template <class F>
  void Post(F f) {
    net::post(ex_, [s = s_, f = std::move(f)]() mutable { f(*s); });
  }
  std::shared_ptr<Session> s_;
  net::any_io_executor ex_;
};

void Session::Dispatch() {
  auto r = std::make_shared<SessionResponder>(shared_from_this());
  const Endpoint* match = nullptr;
  bool path_known = false;
  for (const Endpoint& e : srv_.endpoints) {
    if (e.path != req_.path) continue;
    path_known = true;
    if (e.method == req_.method) match = &e;
  }
  try {
    if (!match) {
      if (path_known) throw ApiError(405, "method " + req_.method + " is not allowed on " + req_.path);
      throw ApiError(404, "no such endpoint: " + req_.method + " " + req_.path +
                              " (strata serves /health, /metrics, /v1/models, /v1/completions, /v1/chat/completions)",
                     "not_found_error");
    }
    if (match->needs_auth && !srv_.st.opts.api_key.empty()) {
      auto it = req_.headers.find("authorization");
      const std::string got = it == req_.headers.end() ? "" : it->second;
      if (!ConstantTimeEqual(got, "Bearer " + srv_.st.opts.api_key))
        throw ApiError(401, it == req_.headers.end() ? "an API key is required: send Authorization: Bearer KEY"
                                                     : "the API key is not valid",
                       "authentication_error", "", "invalid_api_key");
    }
    if (match->needs_ready) {
      const Phase p = srv_.st.phase.load();
      if (p == Phase::kLoading) throw ApiError(503, "the server is loading: " + srv_.st.Status(), "unavailable_error");
      if (p == Phase::kStopping) throw ApiError(503, "the server is shutting down", "unavailable_error");
    }
    match->handle(srv_.st, req_, r);
  } catch (const ApiError& e) {
    SendError(r, e);
  } catch (const std::exception& e) {
    SendError(r, ApiError(500, std::string("internal error: ") + e.what(), "server_error"));
  }
}

}  // namespace

void Server::Impl::Accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      // EMFILE and the like: wait a little rather than spin.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return Accept();
    }
    if (st.phase.load() == Phase::kStopping) {
      beast::error_code e;
      s.close(e);
    } else {
      beast::error_code e;
      s.set_option(tcp::no_delay(true), e);  // each event leaves at once (no Nagle wait)
      std::make_shared<Session>(std::move(s), *this)->Start();
    }
    Accept();
  });
}

Server::Server(Store& store, const ServeOptions& o) : impl_(std::make_unique<Impl>(store, o)) {
  Impl& I = *impl_;
  I.endpoints = {HealthEndpoint(), ModelsEndpoint(), CompletionsEndpoint(), ChatCompletionsEndpoint(), MetricsEndpoint()};
  I.names = o.models;
  if (I.names.empty()) I.names = store.ListRefs();
  if (I.names.empty()) throw Error("the store " + store.root() + " has no variants to serve; compile one first (strata compile PLAN)");
  for (const std::string& n : I.names) store.ResolveRef(n);  // throws naming the variants there are
  beast::error_code ec;
  const auto addr = net::ip::make_address(o.host, ec);
  if (ec) throw Error("--host \"" + o.host + "\" is not an IP address: " + ec.message());
  if (o.port < 0 || o.port > 65535) throw Error("--port must be 0..65535");
  tcp::endpoint ep(addr, static_cast<uint16_t>(o.port));
  I.acceptor.open(ep.protocol(), ec);
  if (!ec) I.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) I.acceptor.bind(ep, ec);
  if (!ec) I.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw Error("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + ec.message() +
                (ec == net::error::address_in_use ? " (another server is using the port: give --port N)" : ""));
}

Server::~Server() = default;

uint16_t Server::port() const { return impl_->acceptor.local_endpoint().port(); }

void Server::Stop() {
  impl_->stop_requested.store(true);
  std::lock_guard<std::mutex> lock(impl_->stop_mu);
  impl_->stop_cv.notify_all();
}

namespace {

// The distinct tensor nodes a model uses, with their resident bytes (zeros
// cost nothing: they are never touched).
std::map<Hash, uint64_t> TensorBytes(const Model& m) {
  std::map<Hash, uint64_t> out;
  auto add = [&](const HostTensor* t) {
    if (t) out[t->node] = t->zero ? 0 : t->numel() * DTypeSize(t->dtype);
  };
  add(m.embed);
  add(m.final_norm);
  add(m.lm_head);
  for (const auto& [h, ws] : m.weight_sets)
    for (const HostTensor* t : ws->by_role) add(t);
  return out;
}

}  // namespace

void Server::Impl::Load() {
  const ServeOptions& o = st.opts;
  st.pool = std::make_shared<WeightPool>(store, o.device, o.verify_load);
  // The context: --ctx, else the smallest model context capped at 4096.
  int64_t ctx = o.ctx;
  std::vector<ModelConfig> configs;
  for (const std::string& n : names) configs.push_back(LoadVariantConfig(store, LoadVariant(store, store.ResolveRef(n))));
  if (ctx <= 0) {
    ctx = 4096;
    for (const ModelConfig& c : configs) ctx = std::min<int64_t>(ctx, c.max_position_embeddings);
  }
  for (size_t i = 0; i < names.size(); ++i)
    if (std::string p = ContextProblem(configs[i], ctx); !p.empty())
      throw Error("--ctx " + std::to_string(ctx) + " for \"" + names[i] + "\": " + p);
  st.ctx = ctx;
  // The KV budget: --kv-memory, else room for max_batch sequences of the
  // full context of the largest model (CPU: address space only until used).
  std::map<std::pair<Hash, Hash>, VariantTokenizer> tokenizers;
  // Tests of the loading phase (GET /health answering 503) slow it down.
  const char* delay = std::getenv("STRATA_SERVE_TEST_LOAD_DELAY_S");
  for (size_t i = 0; i < names.size(); ++i) {
    if (stop_requested.load()) return;
    if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(std::atof(delay) * 1000)));
    {
      std::lock_guard<std::mutex> lock(st.status_mu);
      st.status = "loading " + names[i] + " (" + std::to_string(i + 1) + " of " + std::to_string(names.size()) + ")";
    }
    auto m = std::make_unique<ServedModel>();
    m->name = names[i];
    m->variant = store.ResolveRef(names[i]);
    EngineOptions eo;
    eo.device = o.device;
    eo.verify_load = o.verify_load;
    eo.max_context = ctx;
    eo.kv_budget_bytes = o.kv_memory ? (o.device == "cuda" ? o.kv_memory / names.size() : o.kv_memory) : 0;
    eo.kv_positions = o.kv_memory ? 0 : static_cast<int64_t>(o.max_batch) * ctx;
    m->engine = Engine::Open(store, m->variant, eo, st.pool);
    // Variants compiled from one base carry the same tokenizer files (the same
    // blobs): they share one Tokenizer (its tables are shared, read-only).
    {
      const Variant v = LoadVariant(store, m->variant);
      auto blob = [&](const char* f) {
        auto it = v.files.find(f);
        return it == v.files.end() ? Hash{} : it->second;
      };
      const std::pair<Hash, Hash> key{blob("tokenizer.json"), blob("tokenizer_config.json")};
      if (auto it = tokenizers.find(key); key.first != Hash{} && it != tokenizers.end()) {
        m->tok = it->second;
      } else {
        m->tok = LoadVariantTokenizer(store, m->variant);
        if (m->tok && key.first != Hash{}) tokenizers.emplace(key, *m->tok);
      }
    }
    const ModelConfig& c = m->engine->config();
    for (int id : c.eos_token_ids) m->stop_ids.push_back(id);
    if (m->tok) {
      const Tokenizer& t = m->tok->tokenizer;
      if (t.eos_id() >= 0 && std::find(m->stop_ids.begin(), m->stop_ids.end(), t.eos_id()) == m->stop_ids.end())
        m->stop_ids.push_back(t.eos_id());
      m->chat_stop_ids = m->stop_ids;
      try {
        m->chat = ResolveChatTemplate("", m->tok->config.chat_template, std::string(t.TokenText(t.bos_id())),
                                      std::string(t.TokenText(t.eos_id())));
        for (const std::string& s : ChatStopTokens(*m->chat, &t))
          if (auto id = t.TokenId(s); id && std::find(m->chat_stop_ids.begin(), m->chat_stop_ids.end(), *id) == m->chat_stop_ids.end())
            m->chat_stop_ids.push_back(*id);
      } catch (const std::exception& e) {
        m->chat_problem = e.what();
      }
    } else {
      m->chat_problem = "the variant has no tokenizer";
      m->chat_stop_ids = m->stop_ids;
    }
    const EngineInfo info = m->engine->info();
    m->layers = info.layers;
    m->distinct_layers = info.distinct_layers;
    m->created = static_cast<int64_t>(time(nullptr));
    st.models.push_back(std::move(m));
  }
  // Bytes per model and those shared with another served model.
  std::vector<std::map<Hash, uint64_t>> bytes;
  for (const auto& m : st.models) bytes.push_back(TensorBytes(m->engine->model()));
  for (size_t i = 0; i < st.models.size(); ++i) {
    for (const auto& [h, b] : bytes[i]) {
      st.models[i]->distinct_bytes += b;
      for (size_t j = 0; j < st.models.size(); ++j)
        if (j != i && bytes[j].count(h)) {
          st.models[i]->shared_bytes += b;
          break;
        }
    }
  }
  std::vector<Engine*> engines;
  for (const auto& m : st.models) engines.push_back(m->engine.get());
  SchedulerOptions so;
  so.max_batch = o.max_batch;
  so.max_queue = o.max_queue;
  so.prefill_chunk = o.prefill_chunk;
  so.kv_budget_bytes = o.kv_memory;
  st.scheduler = std::make_unique<Scheduler>(engines, so);
}

void Server::Impl::BeginStop() {
  st.phase.store(Phase::kStopping);
  beast::error_code ec;
  acceptor.close(ec);
}

void Server::Run() {
  Impl& I = *impl_;
  I.signals.async_wait([this](beast::error_code ec, int) {
    if (!ec) Stop();
  });
  I.Accept();
  std::vector<std::thread> io;
  for (int i = 0; i < std::max(1, I.st.opts.io_threads); ++i) io.emplace_back([&] { I.ioc.run(); });
  auto join = [&] {
    I.ioc.stop();
    for (auto& t : io) t.join();
  };
  try {
    I.Load();
  } catch (...) {
    I.BeginStop();
    join();
    throw;
  }
  if (!I.stop_requested.load()) {
    I.st.phase.store(Phase::kReady);
    if (!I.st.opts.quiet) {
      const SchedulerStats ss = I.st.scheduler->stats();
      uint64_t distinct = 0;
      for (const auto& m : I.st.models) distinct += m->distinct_bytes;
      fprintf(stderr,
              "strata serve: %zu model%s on %s, weights %.1f MiB resident (%.1f MiB saved by sharing), KV budget %.1f "
              "MiB, context %lld, max batch %d\n",
              I.st.models.size(), I.st.models.size() == 1 ? "" : "s", I.st.opts.device.c_str(),
              I.st.pool->resident_bytes() / 1048576.0,
              (distinct > I.st.pool->resident_bytes() ? distinct - I.st.pool->resident_bytes() : 0) / 1048576.0,
              ss.kv_budget_bytes / 1048576.0, static_cast<long long>(I.st.ctx), I.st.opts.max_batch);
      fprintf(stderr, "listening on http://%s:%u (OpenAI API at /v1)\n", I.st.opts.host.c_str(), port());
    }
  }
  {
    std::unique_lock<std::mutex> lock(I.stop_mu);
    I.stop_cv.wait(lock, [&] { return I.stop_requested.load(); });
  }
  if (!I.st.opts.quiet) fprintf(stderr, "strata serve: shutting down\n");
  I.BeginStop();
  const auto deadline =
      Clock::now() + std::chrono::microseconds(static_cast<int64_t>(I.st.opts.shutdown_timeout_s * 1e6));
  if (I.st.scheduler) I.st.scheduler->Stop(deadline);
  // Let the last answers reach their clients.
  for (auto t = Clock::now(); I.busy.load() > 0 && Clock::now() - t < std::chrono::seconds(5);)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  join();
  I.st.scheduler.reset();
}

}  // namespace strata::serve
