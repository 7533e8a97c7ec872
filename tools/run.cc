// `strata run`: a compiled variant (or an HF directory, compiled on the fly)
// executed from the store.
#include <tbb/global_control.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "commands.h"
#include "strata/compiler/compile.h"
#include "strata/formats/error.h"
#include "strata/formats/npy.h"
#include "strata/formats/variant_check.h"
#include "strata/runtime/backend.h"
#include "strata/runtime/cpu_kernels.h"
#include "strata/runtime/sampler.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/chat.h"
#include "strata/runtime/tokenizer.h"
#ifdef STRATA_HAVE_CUDA
#include "progress.h"
#include "strata/cuda/cuda_backend.h"
#endif

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace strata {

namespace {

std::vector<int> ParseTokens(const std::string& s) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t used = 0;
      long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw 0;
      out.push_back(static_cast<int>(v));
    } catch (...) {
      throw UsageError("--tokens wants comma-separated non-negative integers, got \"" + item + "\"");
    }
  }
  if (out.empty()) throw UsageError("--tokens is empty");
  return out;
}

void WriteFileOrThrow(const std::string& path, const std::string& bytes) {
  fs::path p = fs::absolute(path);
  WriteFileAtomically(p.string(), bytes, p.parent_path().string());
}

// What --prompt, --prompt-file and --chat ask for.
struct TextOptions {
  std::string prompt, prompt_file, chat_template, system, vocab_gguf;
  bool has_prompt = false, chat = false;
};

// --vocab-gguf when given, else the tokenizer the variant carries.
VariantTokenizer TokenizerFor(Store& store, const std::string& name, const std::string& vocab_gguf) {
  if (!vocab_gguf.empty()) {
    GgufFile f = GgufFile::Read(vocab_gguf);
    TokenizerConfig cfg;
    cfg.chat_template = f.FindString("tokenizer.chat_template").value_or("");
    return {Tokenizer::FromGguf(f), cfg, vocab_gguf};
  }
  auto t = LoadVariantTokenizer(store, VariantFor(store, name, /*verbose=*/false));
  if (!t)
    throw Error("variant \"" + name + "\" has no tokenizer (neither tokenizer.json nor a GGUF vocabulary among "
                "its files); pass --vocab-gguf FILE, or give token ids with --tokens");
  return std::move(*t);
}

void PrintTextJson(const std::vector<int>& prompt, const GenerateResult& r, const std::string& text) {
  std::cout << Json{{"prompt_tokens", prompt}, {"tokens", r.tokens}, {"text", text}, {"load_s", r.load_s},
                    {"prefill_tokens_per_s", r.prefill_tps}, {"decode_tokens_per_s", r.decode_tps}}
                   .dump()
            << "\n";
}

// Generate() for the text front ends: the request with its prompt and token
// callback filled in per call, the last result kept for --json and -v.
struct TextGenerator {
  Store& store;
  GenerateRequest req;
  GenerateResult last;
  std::vector<int> last_prompt;

  void operator()(const std::vector<int>& prompt, const std::function<bool(int)>& on_token) {
    req.prompt = last_prompt = prompt;
    req.on_token = on_token;
    last = Generate(store, req);
    if (req.verbose)
      fprintf(stderr, "\n[load %.3f s, prefill %zu tokens %.1f tok/s, decode %zu tokens %.1f tok/s]\n", last.load_s,
              prompt.size(), last.prefill_tps, last.tokens.size(), last.decode_tps);
  }
};

// Writes generated text as it arrives (nothing under --json).
std::function<void(std::string_view)> Emitter(bool json) {
  return [json](std::string_view s) {
    if (json) return;
    fwrite(s.data(), 1, s.size(), stdout);
    fflush(stdout);
  };
}

// --prompt: the text with BOS as the tokenizer config says, then the
// continuation streamed as it is generated.
void RunPrompt(TextGenerator& gen, const Tokenizer& tok, const std::string& text, bool json) {
  std::vector<int> prompt = tok.EncodePrompt(text);
  if (prompt.empty()) throw UsageError("the prompt is empty and the tokenizer adds no BOS: nothing to run");
  auto emit = Emitter(json);
  StreamDecoder decoder(tok);
  std::string out;
  gen(prompt, [&](int id) {
    std::string piece = decoder.Push(id);
    out += piece;
    emit(piece);
    return id != tok.eos_id();
  });
  std::string rest = decoder.Finish();
  emit(rest);
  if (json) PrintTextJson(prompt, gen.last, out + rest);
  else printf("\n");
}

// --chat: one turn with --prompt, else a turn per line of stdin.
void RunChat(TextGenerator& gen, const VariantTokenizer& vt, const TextOptions& o, const std::string& text, bool json) {
  const Tokenizer& tok = vt.tokenizer;
  ChatTemplate ct = ResolveChatTemplate(o.chat_template, vt.config.chat_template, std::string(tok.TokenText(tok.bos_id())),
                                        std::string(tok.TokenText(tok.eos_id())));
  ChatSession chat(tok, ct, o.system);
  auto generate = [&](const std::vector<int>& p, const std::function<bool(int)>& on_token) { gen(p, on_token); };
  if (o.has_prompt) {
    std::string reply = chat.Turn(text, generate, Emitter(json));
    if (json) PrintTextJson(gen.last_prompt, gen.last, reply);
    else printf("\n");
    return;
  }
  if (json) throw UsageError("--json with --chat needs a single turn: give it --prompt");
  const bool tty = isatty(STDIN_FILENO);
  if (tty) fprintf(stderr, "chat (%s format); end with Ctrl-D or /exit\n", std::string(ChatFormatName(ct.format)).c_str());
  for (std::string line;;) {
    if (tty) fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    chat.Turn(line, generate, Emitter(false));
    printf("\n");
    fflush(stdout);
  }
}

// Text in, text out: the prompt (or each chat turn) is encoded with the
// variant's tokenizer and the reply streams to stdout as tokens arrive.
int RunText(Store& store, const GenerateRequest& req, const TextOptions& o, bool json) {
  VariantTokenizer vt = TokenizerFor(store, req.name, o.vocab_gguf);
  if (req.verbose) fprintf(stderr, "tokenizer: %s, from %s\n", vt.tokenizer.description().c_str(), vt.source.c_str());
  const std::string text = o.prompt_file.empty() ? o.prompt : ReadFile(o.prompt_file);
  TextGenerator gen{store, req, {}, {}};
  if (o.chat) RunChat(gen, vt, o, text, json);
  else RunPrompt(gen, vt.tokenizer, text, json);
  return 0;
}
}  // namespace

int RunRun(const std::vector<std::string>& args) {
  std::string name, device = "cpu", tokens_s, logits_out, store_dir;
  int n = 32, threads = 0;
  bool all_logits = false, no_elide = false, verbose = false, json = false, no_verify_load = false;
  SamplerOptions so;
  po::options_description d("options");
  d.add_options()("name", po::value(&name)->required(), "variant name, or a path to an HF model directory")(
      "device", po::value(&device), "cpu (default) | cuda")(
      "tokens", po::value(&tokens_s), "prompt token ids, comma-separated (e.g. 1,15043,3186)")(
      ",n", po::value(&n), "new tokens to generate (default 32; stops early at EOS)")(
      "logits-out", po::value(&logits_out), "write the prompt's logits as float32 .npy (last position)")(
      "all-logits", po::bool_switch(&all_logits), "with --logits-out: every prompt position, shape (tokens, vocab)")(
      "threads", po::value(&threads), "worker threads (default: all cores)")(
      "temperature", po::value(&so.temperature), "0 (default) is greedy")(
      "top-k", po::value(&so.top_k), "keep the k most likely tokens (0: off)")(
      "top-p", po::value(&so.top_p), "keep the smallest set with this probability mass (1: off)")(
      "repetition-penalty", po::value(&so.repetition_penalty), "HF's repetition penalty (1: off)")(
      "seed", po::value(&so.seed), "random seed for sampling (default 0)")(
      "no-elide", po::bool_switch(&no_elide), "compute layers whose o_proj and down_proj are zero anyway")(
      "no-verify-load", po::bool_switch(&no_verify_load),
      "do not hash the weights' blobs as they load (faster start; a corrupt blob is then used as it is)")(
      "verbose,v", po::bool_switch(&verbose), "report load, elided layers and speed on stderr")(
      "json", po::bool_switch(&json), "print tokens and timings as JSON");
  AddStoreOption(d, store_dir);
  TextOptions text;
  d.add_options()("prompt", po::value(&text.prompt), "prompt text, encoded with the variant's tokenizer; prints text")(
      "prompt-file", po::value(&text.prompt_file), "read the prompt text from this file")(
      "chat", po::bool_switch(&text.chat), "chat with the model's chat template (one turn with --prompt, else a REPL on stdin)")(
      "chat-template", po::value(&text.chat_template), "llama2 | mistral | chatml | llama3 (default: from tokenizer_config.json)")(
      "system", po::value(&text.system), "with --chat: a system message")(
      "vocab-gguf", po::value(&text.vocab_gguf), "tokenize with this GGUF vocabulary instead of the variant's tokenizer");
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!ParseArgs(args, d, pos, vm, "strata run NAME (--tokens 1,15043,3186 | --prompt TEXT | --prompt-file F | --chat) [-n 32]",
                 "Runs a compiled variant straight from the store (weights used in place through mmap; a\n"
                 "layer repeated at several depths exists once in memory). NAME may also be an HF model\n"
                 "directory, compiled on the fly into the store. Prints the generated token ids, or with\n"
                 "--prompt/--chat the generated text as it is produced."))
    return 0;
  CheckDevice(device);
  if (n < 0) throw UsageError("-n must be >= 0");
  CheckThreads(threads);
  if (std::string p = SamplerOptionsProblem(so); !p.empty()) throw UsageError("--" + p);
  if (all_logits && logits_out.empty()) throw UsageError("--all-logits needs --logits-out FILE");
  text.has_prompt = vm.count("prompt") || vm.count("prompt-file");
  if (tokens_s.empty() != (text.has_prompt || text.chat))
    throw UsageError("give exactly one of --tokens IDS, --prompt TEXT / --prompt-file FILE, or --chat");
  if (vm.count("prompt") && vm.count("prompt-file")) throw UsageError("give --prompt or --prompt-file, not both");
  std::vector<int> prompt = tokens_s.empty() ? std::vector<int>{} : ParseTokens(tokens_s);
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);

  Store store(Store::DefaultRoot(store_dir), /*create=*/fs::is_directory(name));
  GenerateRequest req{name, prompt, n, so, !no_elide, logits_out, all_logits, verbose, {}};
  req.device = device;
  req.verify_load = !no_verify_load;
  if (tokens_s.empty()) return RunText(store, req, text, json);
  GenerateResult r = Generate(store, req);
  if (json) {
    std::cout << Json{{"tokens", r.tokens},
                      {"load_s", r.load_s},
                      {"prefill_tokens_per_s", r.prefill_tps},
                      {"decode_tokens_per_s", r.decode_tps},
                      {"elided_layers", r.elided},
                      {"layers", r.layers},
                      {"distinct_layers", r.distinct_layers},
                      {"weight_bytes_mapped", r.mapped},
                      {"weight_bytes_materialized", r.materialized},
                      {"device", device},
                      {"weight_bytes_device", r.device_bytes}}
                     .dump()
              << "\n";
    return 0;
  }
  for (size_t i = 0; i < r.tokens.size(); ++i) printf("%s%d", i ? "," : "", r.tokens[i]);
  printf("\n");
  if (verbose) {
    fprintf(stderr, "model: %d layers over %d distinct weight sets, %d elided%s; %s kernels\n", r.layers,
            r.distinct_layers, r.elided, no_elide ? " (--no-elide)" : "",
            device == "cuda" ? "CUDA" : CpuHasAvx2() ? "AVX2/FMA" : "portable");
    if (device == "cuda")
      fprintf(stderr, "weights: %llu bytes resident on %s\n", static_cast<unsigned long long>(r.device_bytes),
              r.device_name.c_str());
    else
      fprintf(stderr, "weights: %llu bytes mapped in place, %llu materialized\n",
              static_cast<unsigned long long>(r.mapped), static_cast<unsigned long long>(r.materialized));
    fprintf(stderr, "load %.3f s, prefill %zu tokens %.1f tok/s, decode %zu tokens %.1f tok/s\n", r.load_s,
            prompt.size(), r.prefill_tps, r.tokens.size(), r.decode_tps);
  }
  return 0;
}

GenerateResult Generate(Store& store, const GenerateRequest& req) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  Hash variant = VariantFor(store, req.name, req.verbose);
  const bool cuda = req.device == "cuda";
  CheckDevice(req.device);
  BackendOptions bo;
  bo.max_context = static_cast<int64_t>(req.prompt.size()) + req.n;
  // Before any weight is read: a run that cannot fit fails now, not after
  // loading and hashing the weights, sizing a cache or decoding up to the limit.
  const ModelConfig config = LoadVariantConfig(store, LoadVariant(store, variant));
  if (std::string p = ContextProblem(config, bo.max_context); !p.empty()) {
    const int64_t room = config.max_position_embeddings - static_cast<int64_t>(req.prompt.size());
    throw Error("-n " + std::to_string(req.n) + " after a " + std::to_string(req.prompt.size()) + "-token prompt: " +
                p + "; " + (room > 0 ? "give -n " + std::to_string(room) + " or less, or a shorter prompt"
                                     : "shorten the prompt"));
  }
  // CUDA reads the weights from the store itself: the host keeps metadata only.
  WeightStore weights(store, /*host_data=*/!cuda, req.verify_load);
  Model model = AssembleModel(store, weights, variant);
  bo.elide = req.elide;
  std::unique_ptr<Backend> backend;
  // Greedy decode on the GPU takes the argmax there (only the token comes back).
  std::function<int(int)> device_greedy;
  GenerateResult r;
  if (cuda) {
#ifdef STRATA_HAVE_CUDA
    ProgressBar bar("load", isatty(STDERR_FILENO));
    CudaLoadOptions lo;
    lo.on_start = [&](uint64_t total) { bar.Start(total); };
    lo.bytes_done = bar.counter();
    std::unique_ptr<CudaBackend> cb = MakeCudaBackend(model, bo, store, lo);
    bar.Finish();
    r.device_bytes = cb->stats().weight_bytes;
    r.device_name = CudaDeviceSummary();
    if (req.sampler.temperature <= 0 && req.sampler.repetition_penalty == 1.0) {
      CudaBackend* p = cb.get();
      device_greedy = [p](int tok) { return p->ForwardArgmax({tok}); };
    }
    backend = std::move(cb);
#endif
  } else {
    backend = MakeCpuBackend(model, bo);
  }
  auto t1 = Clock::now();

  std::vector<float> logits(model.config.vocab);
  std::vector<float> all;
  backend->Forward(req.prompt, logits.data(), req.all_logits ? &all : nullptr);
  auto t2 = Clock::now();
  if (!req.logits_out.empty()) {
    if (req.all_logits)
      WriteFileOrThrow(req.logits_out, NpyFloat32(all, {static_cast<int64_t>(req.prompt.size()), model.config.vocab}));
    else
      WriteFileOrThrow(req.logits_out, NpyFloat32(logits, {model.config.vocab}));
  }
  Sampler sampler(req.sampler);
  std::vector<int> seen = req.prompt, out;
  int next = req.n > 0 ? sampler.Next(logits, seen) : 0;
  for (int i = 0; i < req.n; ++i) {
    const int tok = next;
    out.push_back(tok);
    seen.push_back(tok);
    if (req.on_token && !req.on_token(tok)) break;
    const auto& eos = model.config.eos_token_ids;
    if (std::find(eos.begin(), eos.end(), tok) != eos.end()) break;
    if (i + 1 < req.n) {
      if (device_greedy) {
        next = device_greedy(tok);
      } else {
        backend->Forward({tok}, logits.data(), nullptr);
        next = sampler.Next(logits, seen);
      }
    }
  }
  auto t3 = Clock::now();
  auto secs = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
  r.tokens = out;
  r.load_s = secs(t0, t1);
  r.prefill_tps = req.prompt.size() / std::max(1e-9, secs(t1, t2));
  // Decode speed counts the forward passes after the prompt's (one per token but the last).
  r.decode_tps = out.size() > 1 ? (out.size() - 1) / std::max(1e-9, secs(t2, t3)) : 0;
  r.elided = backend->elided_layers();
  r.layers = static_cast<int>(model.layers.size());
  r.distinct_layers = static_cast<int>(model.weight_sets.size());
  r.mapped = weights.mapped_bytes();
  r.materialized = weights.materialized_bytes();
  return r;
}

}  // namespace strata
