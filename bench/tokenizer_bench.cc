// Tokenizer encode/decode throughput on ~10 MB of generated text for the Llama
// SPM and GPT-2 vocabularies of ../shared/vocab, loaded from GGUF and from the
// converted tokenizer.json. usage: tokenizer_bench VOCAB_DIR [MEGABYTES]
#include <algorithm>
#include <time.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "strata/formats/gguf.h"
#include "strata/runtime/tokenizer.h"

using namespace strata;

namespace {

// Text with the statistics that matter to a tokenizer: Zipf-distributed words
// (the GPT-2 vocabulary's whole-word tokens, so frequent words repeat as in
// prose), punctuation, numbers, line breaks, and ~3% non-Latin script and
// emoji. Deterministic, so every run measures the same input.
std::string MakeText(const GgufFile& gpt2, size_t bytes) {
  std::vector<std::string> words;
  for (const std::string& t : gpt2.GetStringArray("tokenizer.ggml.tokens")) {
    if (t.size() < 3 || t.compare(0, 2, "\xC4\xA0") != 0) continue;  // "Ġword": a word after a space
    std::string w = t.substr(2);
    if (std::all_of(w.begin(), w.end(), [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }))
      words.push_back(w);
  }
  const std::vector<std::string> foreign = {"Привет мир", "你好，世界", "こんにちは", "🦙🚀", "ქართული", "ἀρχή", "مرحبا"};
  const std::vector<std::string> punct = {",", ".", ";", ":", "!", "?", " -", "'s", "\"", "(", ")"};
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> u(0, 1);
  std::string out;
  out.reserve(bytes + 64);
  while (out.size() < bytes) {
    double r = u(rng);
    if (r < 0.03) out += " " + foreign[rng() % foreign.size()];
    else if (r < 0.06) out += " " + std::to_string(rng() % 100000);
    else if (r < 0.15) out += punct[rng() % punct.size()];
    else if (r < 0.17) out += (rng() % 4 == 0) ? "\n\n" : "\n";
    else out += " " + words[static_cast<size_t>(std::pow(u(rng), 3.0) * words.size())];  // Zipf-like
  }
  return out;
}

// CPU time of this thread: the build machine is shared, and wall time under
// load measures the neighbours as much as the tokenizer.
double CpuSeconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Speeds per second of this thread's CPU time; "first run" starts with an
// empty word cache, the other figure is the best of two more runs.
void Measure(const std::string& label, const Tokenizer& tok, const std::string& text) {
  double t0 = CpuSeconds();
  std::vector<int> ids = tok.Encode(text);
  double cold = CpuSeconds() - t0;
  double best = cold;
  for (int i = 0; i < 2; ++i) {
    t0 = CpuSeconds();
    ids = tok.Encode(text);
    best = std::min(best, CpuSeconds() - t0);
  }
  t0 = CpuSeconds();
  std::string back = tok.Decode(ids);
  double dec = CpuSeconds() - t0;
  const double mb = text.size() / 1e6;
  printf("%-26s encode %7.2f MB/s (first run %6.2f MB/s), %9zu tokens, %5.2f bytes/token; decode %7.1f MB/s%s\n",
         label.c_str(), mb / best, mb / cold, ids.size(), static_cast<double>(text.size()) / ids.size(), mb / dec,
         back == text ? "" : "  (decode differs from input!)");
  fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s VOCAB_DIR [MEGABYTES]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const size_t mb = argc > 2 ? std::stoul(argv[2]) : 10;
  GgufFile spm = GgufFile::Read(dir + "/ggml-vocab-llama-spm.gguf");
  GgufFile gpt2 = GgufFile::Read(dir + "/ggml-vocab-gpt-2.gguf");
  const std::string text = MakeText(gpt2, mb * 1000 * 1000);
  printf("text: %zu bytes of generated prose\n", text.size());
  for (const auto& [name, f] : {std::pair<const char*, const GgufFile*>{"llama-spm", &spm}, {"gpt2", &gpt2}}) {
    Measure(std::string(name) + " (GGUF)", Tokenizer::FromGguf(*f), text);
    HfTokenizerFiles h = GgufVocabToHf(*f);
    Measure(std::string(name) + " (tokenizer.json)",
            Tokenizer::FromHfJson(h.tokenizer_json, ParseTokenizerConfig(h.tokenizer_config_json, name), name), text);
  }
  return 0;
}
