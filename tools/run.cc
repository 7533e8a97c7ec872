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
#include "progress.h"
#include "strata/formats/gguf.h"
#include "strata/runtime/chat.h"
#include "strata/runtime/engine.h"
#include "strata/runtime/sampler.h"
#include "strata/runtime/tokenizer.h"

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

// --vocab-gguf when given, else the tokenizer variant `variant` (named `name`) carries.
VariantTokenizer TokenizerFor(Store& store, const Hash& variant, const std::string& name,
                              const std::string& vocab_gguf) {
  if (!vocab_gguf.empty()) {
    GgufFile f = GgufFile::Read(vocab_gguf);
    TokenizerConfig cfg;
    cfg.chat_template = f.FindString("tokenizer.chat_template").value_or("");
    return {Tokenizer::FromGguf(f), cfg, vocab_gguf};
  }
  auto t = LoadVariantTokenizer(store, variant);
  if (!t)
    throw Error("variant \"" + name + "\" has no tokenizer (neither tokenizer.json nor a GGUF vocabulary among "
                "its files); pass --vocab-gguf FILE, or give token ids with --tokens");
  return std::move(*t);
}

void PrintTextJson(const std::vector<int>& prompt, const Engine& engine, const GenerateStats& st,
                   const std::string& text) {
  std::cout << Json{{"prompt_tokens", prompt},
                    {"tokens", st.tokens},
                    {"text", text},
                    {"load_s", engine.info().load_s},
                    {"reused_tokens", st.reused_tokens},
                    {"prefill_tokens_per_s", st.prefill_tokens_per_s()},
                    {"decode_tokens_per_s", st.decode_tokens_per_s()}}
                   .dump()
            << "\n";
}

// One sequence for the text front ends: every turn of a chat continues it,
// so only the new tokens of each turn are run (Sequence::Continue).
struct TextGenerator {
  Engine& engine;
  Sequence& seq;
  int n = 0;
  bool verbose = false;
  GenerateStats last;
  std::vector<int> last_prompt;

  void operator()(const std::vector<int>& prompt, const std::function<bool(int)>& on_token) {
    last_prompt = prompt;
    last = seq.Generate(prompt, n, on_token);
    if (verbose)
      fprintf(stderr, "\n[prefill %lld tokens (%lld kept from before) %.1f tok/s, decode %zu tokens %.1f tok/s]\n",
              static_cast<long long>(last.prefill_tokens), static_cast<long long>(last.reused_tokens),
              last.prefill_tokens_per_s(), last.tokens.size(), last.decode_tokens_per_s());
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
void RunPrompt(TextGenerator& gen, const Tokenizer& tok, const std::vector<int>& prompt, bool json) {
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
  if (json) PrintTextJson(prompt, gen.engine, gen.last, out + rest);
  else printf("\n");
}

// --chat: one turn with --prompt, else a turn per line of stdin.
void RunChat(TextGenerator& gen, ChatSession& chat, const ChatTemplate& ct, const TextOptions& o, const std::string& text,
             bool json) {
  auto generate = [&](const std::vector<int>& p, const std::function<bool(int)>& on_token) { gen(p, on_token); };
  if (o.has_prompt) {
    std::string reply = chat.Turn(text, generate, Emitter(json));
    if (json) PrintTextJson(gen.last_prompt, gen.engine, gen.last, reply);
    else printf("\n");
    return;
  }
  if (json) throw UsageError("--json with --chat needs a single turn: give it --prompt");
  const bool tty = isatty(STDIN_FILENO);
  if (tty) fprintf(stderr, "chat (%s); end with Ctrl-D or /exit\n", ct.name.c_str());
  for (std::string line;;) {
    if (tty) fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line == "/exit" || line == "/quit") break;
    if (line.empty()) continue;
    chat.Turn(line, generate, Emitter(false));
    printf("\n");
    fflush(stdout);
  }
}

// The context a run needs, checked before any weight is read: a run that
// cannot fit fails now, not after loading and hashing the weights.
void CheckRunContext(Store& store, const Hash& variant, int64_t prompt_tokens, int n) {
  const ModelConfig config = LoadVariantConfig(store, LoadVariant(store, variant));
  if (std::string p = ContextProblem(config, prompt_tokens + n); !p.empty()) {
    const int64_t room = config.max_position_embeddings - prompt_tokens;
    throw Error("-n " + std::to_string(n) + " after a " + std::to_string(prompt_tokens) + "-token prompt: " + p + "; " +
                (room > 0 ? "give -n " + std::to_string(room) + " or less, or a shorter prompt" : "shorten the prompt"));
  }
}

// Text in, text out: the prompt (or each chat turn) is encoded with the
// variant's tokenizer and the reply streams to stdout as tokens arrive.
int RunText(Store& store, const Hash& variant, const RunOptions& ro, const TextOptions& o, bool json) {
  VariantTokenizer vt = TokenizerFor(store, variant, ro.name, o.vocab_gguf);
  if (ro.verbose) fprintf(stderr, "tokenizer: %s, from %s\n", vt.tokenizer.description().c_str(), vt.source.c_str());
  const Tokenizer& tok = vt.tokenizer;
  const std::string text = o.prompt_file.empty() ? o.prompt : ReadFile(o.prompt_file);
  EngineOptions eo = ro.engine;
  std::vector<int> prompt;
  std::optional<ChatTemplate> ct;
  std::optional<ChatSession> chat;
  if (o.chat) {
    ct = ResolveChatTemplate(o.chat_template, vt.config.chat_template, std::string(tok.TokenText(tok.bos_id())),
                             std::string(tok.TokenText(tok.eos_id())));
    chat.emplace(tok, *ct, o.system);
    // A conversation grows turn by turn: room for the model's whole context
    // (the KV cache takes blocks only as it is used).
    eo.max_context = 0;
  } else {
    prompt = tok.EncodePrompt(text);
    if (prompt.empty()) throw UsageError("the prompt is empty and the tokenizer adds no BOS: nothing to run");
    CheckRunContext(store, variant, static_cast<int64_t>(prompt.size()), ro.n);
    eo.max_context = static_cast<int64_t>(prompt.size()) + ro.n;
  }
  std::unique_ptr<Engine> engine = OpenEngine(store, variant, eo);
  std::unique_ptr<Sequence> seq = engine->NewSequence(ro.sampler);
  TextGenerator gen{*engine, *seq, ro.n, ro.verbose, {}, {}};
  if (o.chat) RunChat(gen, *chat, *ct, o, text, json);
  else RunPrompt(gen, tok, prompt, json);
  return 0;
}

}  // namespace

void CheckDevice(const std::string& device) {
  if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda, not \"" + device + "\"");
  if (std::string p = DeviceProblem(device); !p.empty()) throw Error(p);
}

std::unique_ptr<Engine> OpenEngine(Store& store, const Hash& variant, EngineOptions eo, bool progress) {
  ProgressBar bar("load", progress && eo.device == "cuda" && isatty(STDERR_FILENO));
  eo.on_load_start = [&](uint64_t total) { bar.Start(total); };
  eo.load_bytes_done = bar.counter();
  std::unique_ptr<Engine> e = Engine::Open(store, variant, eo);
  bar.Finish();
  return e;
}

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
      "chat-template", po::value(&text.chat_template), "llama2 | mistral | chatml | llama3 | FILE.jinja (default: the model's chat_template)")(
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
  RunOptions ro;
  ro.name = name;
  ro.n = n;
  ro.sampler = so;
  ro.verbose = verbose;
  ro.engine.device = device;
  ro.engine.elide = !no_elide;
  ro.engine.verify_load = !no_verify_load;
  const Hash variant = VariantFor(store, name, verbose);
  if (tokens_s.empty()) return RunText(store, variant, ro, text, json);

  CheckRunContext(store, variant, static_cast<int64_t>(prompt.size()), n);
  ro.engine.max_context = static_cast<int64_t>(prompt.size()) + n;
  std::unique_ptr<Engine> engine = OpenEngine(store, variant, ro.engine);
  std::unique_ptr<Sequence> seq = engine->NewSequence(so);
  std::vector<float> prompt_logits;
  const GenerateStats st = seq->Generate(prompt, n, {}, logits_out.empty() ? nullptr : &prompt_logits);
  const int64_t V = engine->config().vocab;
  if (!logits_out.empty()) {
    if (all_logits)
      WriteFileOrThrow(logits_out, NpyFloat32(prompt_logits, {static_cast<int64_t>(prompt.size()), V}));
    else
      WriteFileOrThrow(logits_out,
                       NpyFloat32(std::vector<float>(prompt_logits.end() - V, prompt_logits.end()), {V}));
  }
  const EngineInfo info = engine->info();
  if (json) {
    std::cout << Json{{"tokens", st.tokens},
                      {"load_s", info.load_s},
                      {"prefill_tokens_per_s", st.prefill_tokens_per_s()},
                      {"decode_tokens_per_s", st.decode_tokens_per_s()},
                      {"elided_layers", info.elided_layers},
                      {"layers", info.layers},
                      {"distinct_layers", info.distinct_layers},
                      {"weight_bytes_mapped", info.weight_bytes_mapped},
                      {"weight_bytes_materialized", info.weight_bytes_materialized},
                      {"weight_bytes_packed", info.weight_bytes_packed},
                      {"weight_bytes_released", info.weight_bytes_released},
                      {"device", device},
                      {"device_name", info.device_name},
                      {"weight_bytes_device", info.weight_bytes_device}}
                     .dump()
              << "\n";
    return 0;
  }
  for (size_t i = 0; i < st.tokens.size(); ++i) printf("%s%d", i ? "," : "", st.tokens[i]);
  printf("\n");
  if (verbose) {
    fprintf(stderr, "model: %d layers over %d distinct weight sets, %d elided%s; %s\n", info.layers,
            info.distinct_layers, info.elided_layers, no_elide ? " (--no-elide)" : "", info.device_name.c_str());
    if (device == "cuda")
      fprintf(stderr, "weights: %llu bytes resident on the device\n",
              static_cast<unsigned long long>(info.weight_bytes_device));
    else
      fprintf(stderr, "weights: %llu bytes mapped in place (%llu given back to panels), %llu materialized, %llu in panels\n",
              static_cast<unsigned long long>(info.weight_bytes_mapped),
              static_cast<unsigned long long>(info.weight_bytes_released),
              static_cast<unsigned long long>(info.weight_bytes_materialized),
              static_cast<unsigned long long>(info.weight_bytes_packed));
    fprintf(stderr, "load %.3f s, prefill %zu tokens %.1f tok/s, decode %zu tokens %.1f tok/s\n", info.load_s,
            prompt.size(), st.prefill_tokens_per_s(), st.tokens.size(), st.decode_tokens_per_s());
  }
  return 0;
}

}  // namespace strata
