// Jinja source to syntax tree: the lexer (with jinja2's whitespace rules for
// trim_blocks, lstrip_blocks and the -/+ markers) and a recursive-descent
// parser with jinja2's operator precedence.
#include <algorithm>
#include <cerrno>
#include <cctype>
#include <cstring>

#include "jinja_internal.h"

namespace strata::jinja::internal {
namespace {

enum class Tok : uint8_t { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string value;
  int64_t i = 0;
  double f = 0;
  int line = 0;
};

[[noreturn]] void SyntaxError(int line, const std::string& message) {
  throw TemplateError("line " + std::to_string(line) + ": " + message);
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {}

  std::vector<Token> Run() {
    size_t n = src_.size();
    while (pos_ < n) {
      size_t at = NextTag(pos_);
      std::string text = src_.substr(pos_, at - pos_);
      if (at == n) {
        Emit(Tok::kText, text, pos_);
        break;
      }
      char kind = src_[at + 1];
      char sign = at + 2 < n && (src_[at + 2] == '-' || src_[at + 2] == '+') ? src_[at + 2] : 0;
      size_t raw_end = 0;
      bool raw = kind == '%' && IsRawBegin(at + 2 + (sign ? 1 : 0), &raw_end);
      if (sign == '-') text = RStrip(text);
      else if (sign != '+' && kind != '{') text = LStripBlock(text);
      Emit(Tok::kText, text, pos_);
      size_t p = at + 2 + (sign ? 1 : 0);
      if (raw) LexRaw(at, raw_end);
      else if (kind == '#') LexComment(at, p);
      else LexTag(kind, at, p);
    }
    toks_.push_back(Token{Tok::kEof, "", 0, 0, Line(src_.size())});
    return std::move(toks_);
  }

 private:
  // The line of `pos`, counted on from the last position asked about.
  int Line(size_t pos) {
    pos = std::min(pos, src_.size());
    if (pos < line_pos_) {
      line_pos_ = 0;
      line_ = 1;
    }
    line_ += static_cast<int>(std::count(src_.begin() + line_pos_, src_.begin() + pos, '\n'));
    line_pos_ = pos;
    return line_;
  }

  void Emit(Tok t, std::string v, size_t at) {
    if (t == Tok::kText && v.empty()) return;
    toks_.push_back(Token{t, std::move(v), 0, 0, Line(at)});
  }

  size_t NextTag(size_t from) {
    for (size_t k = from; k + 1 < src_.size(); ++k)
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) return k;
    return src_.size();
  }

  static std::string RStrip(const std::string& s) {
    size_t e = s.size();
    while (e > 0 && IsSpace(s[e - 1])) --e;
    return s.substr(0, e);
  }

  // lstrip_blocks: spaces and tabs between the start of a line and a block or
  // comment tag go.
  std::string LStripBlock(const std::string& text) {
    size_t l = text.rfind('\n');
    l = l == std::string::npos ? 0 : l + 1;
    if (l == 0 && !line_starting_) return text;
    for (size_t k = l; k < text.size(); ++k)
      if (text[k] != ' ' && text[k] != '\t') return text;
    return text.substr(0, l);
  }

  // After a tag ends at `p`: `-` eats the whitespace that follows; a block or
  // comment end without + eats one newline (trim_blocks).
  void AfterTag(size_t p, char sign, bool block) {
    if (sign == '-') {
      while (p < src_.size() && IsSpace(src_[p])) ++p;
    } else if (sign != '+' && block && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    pos_ = p;
    line_starting_ = p > 0 && src_[p - 1] == '\n';
  }

  size_t SkipSpace(size_t p) {
    while (p < src_.size() && IsSpace(src_[p])) ++p;
    return p;
  }

  bool Word(size_t p, const char* w, size_t* end) {
    size_t len = std::strlen(w);
    if (src_.compare(p, len, w) != 0) return false;
    size_t e = p + len;
    if (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) return false;
    *end = e;
    return true;
  }

  // `{% raw %}`, `{%- raw -%}`: sets *end past the tag.
  bool IsRawBegin(size_t p, size_t* end) {
    size_t e;
    if (!Word(SkipSpace(p), "raw", &e)) return false;
    e = SkipSpace(e);
    if (src_.compare(e, 3, "-%}") == 0) {
      *end = SkipSpace(e + 3);
      return true;
    }
    if (src_.compare(e, 2, "%}") == 0) {
      *end = e + 2;
      return true;
    }
    return false;
  }

  void LexRaw(size_t at, size_t body) {
    for (size_t k = NextTag(body); k < src_.size(); k = NextTag(k + 1)) {
      if (src_[k + 1] != '%') continue;
      char sign = k + 2 < src_.size() && (src_[k + 2] == '-' || src_[k + 2] == '+') ? src_[k + 2] : 0;
      size_t e;
      if (!Word(SkipSpace(k + 2 + (sign ? 1 : 0)), "endraw", &e)) continue;
      e = SkipSpace(e);
      char esign = 0;
      if (e < src_.size() && (src_[e] == '-' || src_[e] == '+')) esign = src_[e++];
      if (src_.compare(e, 2, "%}") != 0) SyntaxError(Line(e), "expected '%}' after endraw");
      std::string text = src_.substr(body, k - body);
      if (sign == '-') text = RStrip(text);
      else if (sign != '+') text = LStripBlock(text);
      Emit(Tok::kText, text, body);
      AfterTag(e + 2, esign, true);
      return;
    }
    SyntaxError(Line(at), "Missing end of raw directive");
  }

  void LexComment(size_t at, size_t p) {
    size_t end = src_.find("#}", p);
    if (end == std::string::npos) SyntaxError(Line(at), "Missing end of comment tag");
    char sign = end > p && (src_[end - 1] == '-' || src_[end - 1] == '+') ? src_[end - 1] : 0;
    AfterTag(end + 2, sign, true);
  }

  void LexTag(char kind, size_t at, size_t p) {
    bool block = kind == '%';
    Emit(block ? Tok::kBlockBegin : Tok::kVarBegin, "", at);
    int depth = 0;
    size_t n = src_.size();
    while (true) {
      p = SkipSpace(p);
      if (p >= n) SyntaxError(Line(at), std::string("unexpected end of template, expected '") + (block ? "%}" : "}}") + "'");
      const char* close = block ? "%}" : "}}";
      char sign = src_[p] == '-' || (block && src_[p] == '+') ? src_[p] : 0;
      if ((block || depth == 0) && src_.compare(p + (sign ? 1 : 0), 2, close) == 0) {
        Emit(block ? Tok::kBlockEnd : Tok::kVarEnd, "", p);
        AfterTag(p + (sign ? 1 : 0) + 2, sign, block);
        return;
      }
      p = LexToken(p, &depth);
    }
  }

  size_t LexToken(size_t p, int* depth) {
    size_t n = src_.size();
    char c = src_[p];
    int line = Line(p);
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < n && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
      toks_.push_back(Token{Tok::kName, src_.substr(p, e - p), 0, 0, line});
      return e;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) return LexNumber(p, line);
    if (c == '\'' || c == '"') return LexString(p, line);
    static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                 "=", "(", ")", "[", "]", "{", "}", ",", ":", ".", "|", ";"};
    for (const char* op : kOps) {
      size_t len = std::strlen(op);
      if (src_.compare(p, len, op) != 0) continue;
      if (len == 1 && std::strchr("([{", op[0])) ++*depth;
      if (len == 1 && std::strchr(")]}", op[0])) --*depth;
      toks_.push_back(Token{Tok::kOp, op, 0, 0, line});
      return p + len;
    }
    SyntaxError(line, std::string("unexpected char '") + c + "'");
  }

  size_t LexNumber(size_t p, int line) {
    size_t n = src_.size(), e = p;
    auto digits = [&](size_t q) {
      while (q < n && (std::isdigit(static_cast<unsigned char>(src_[q])) ||
                       (src_[q] == '_' && q + 1 < n && std::isdigit(static_cast<unsigned char>(src_[q + 1])))))
        ++q;
      return q;
    };
    e = digits(e);
    bool is_float = false;
    if (e + 1 < n && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
      e = digits(e + 1);
      is_float = true;
    }
    if (e < n && (src_[e] == 'e' || src_[e] == 'E')) {
      size_t q = e + 1;
      if (q < n && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < n && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        e = digits(q);
        is_float = true;
      }
    }
    std::string text;
    for (size_t k = p; k < e; ++k)
      if (src_[k] != '_') text += src_[k];
    Token t{is_float ? Tok::kFloat : Tok::kInt, text, 0, 0, line};
    if (is_float) {
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      t.i = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) Unsupported("integers past 64 bits");
    }
    toks_.push_back(t);
    return e;
  }

  // Python's unicode-escape decoding of the literal's body.
  size_t LexString(size_t p, int line) {
    char q = src_[p];
    std::string out;
    size_t k = p + 1, n = src_.size();
    for (; k < n && src_[k] != q; ++k) {
      char c = src_[k];
      if (c != '\\' || k + 1 >= n) {
        out += c;
        continue;
      }
      char e = src_[++k];
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
        case 'u':
        case 'U': {
          size_t len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (k + len >= n) SyntaxError(line, "truncated \\" + std::string(1, e) + " escape in a string");
          std::string hex = src_.substr(k + 1, len);
          if (hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
            SyntaxError(line, "truncated \\" + std::string(1, e) + " escape in a string");
          out += U32ToUtf8(std::u32string(1, static_cast<char32_t>(std::stoul(hex, nullptr, 16))));
          k += len;
          break;
        }
        case 'N': Unsupported("\\N{...} escapes in strings");
        default:
          if (e >= '0' && e <= '7') {
            unsigned v = 0;
            size_t j = 0;
            for (; j < 3 && k + j < n && src_[k + j] >= '0' && src_[k + j] <= '7'; ++j) v = v * 8 + (src_[k + j] - '0');
            out += U32ToUtf8(std::u32string(1, static_cast<char32_t>(v)));
            k += j - 1;
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    if (k >= n) SyntaxError(line, "unterminated string");
    toks_.push_back(Token{Tok::kString, out, 0, 0, line});
    return k + 1;
  }

  std::string src_;
  size_t pos_ = 0, line_pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;
  std::vector<Token> toks_;
};

// jinja2 reads templates with newlines normalised and one trailing newline
// dropped (keep_trailing_newline=False).
std::string Normalise(std::string_view in) {
  std::string s;
  s.reserve(in.size());
  for (size_t k = 0; k < in.size(); ++k) {
    if (in[k] == '\r') {
      s += '\n';
      if (k + 1 < in.size() && in[k + 1] == '\n') ++k;
    } else {
      s += in[k];
    }
  }
  if (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : toks_(std::move(toks)) {}

  std::unique_ptr<Program> Run() {
    auto p = std::make_unique<Program>();
    std::string end;
    p->body = ParseBody({}, &end);
    return p;
  }

 private:
  const Token& Cur() const { return toks_[pos_]; }
  const Token& Peek(size_t k = 1) const { return toks_[std::min(pos_ + k, toks_.size() - 1)]; }
  Token Next() { return toks_[pos_ < toks_.size() - 1 ? pos_++ : pos_]; }
  bool IsOp(const char* op) const { return Cur().type == Tok::kOp && Cur().value == op; }
  bool IsName(const char* name) const { return Cur().type == Tok::kName && Cur().value == name; }
  bool SkipOp(const char* op) {
    if (!IsOp(op)) return false;
    ++pos_;
    return true;
  }
  bool SkipName(const char* name) {
    if (!IsName(name)) return false;
    ++pos_;
    return true;
  }
  std::string Describe(const Token& t) const {
    switch (t.type) {
      case Tok::kEof: return "end of template";
      case Tok::kBlockEnd: return "end of statement block";
      case Tok::kVarEnd: return "end of print statement";
      case Tok::kString: return "string";
      default: return "'" + t.value + "'";
    }
  }
  [[noreturn]] void Expected(const std::string& what) {
    SyntaxError(Cur().line, "expected " + what + ", got " + Describe(Cur()));
  }
  void ExpectOp(const char* op) {
    if (!SkipOp(op)) Expected(std::string("'") + op + "'");
  }
  std::string ExpectName() {
    if (Cur().type != Tok::kName) Expected("a name");
    return Next().value;
  }
  void ExpectBlockEnd() {
    if (Cur().type != Tok::kBlockEnd) Expected("end of statement block");
    ++pos_;
  }

  ExprP Node(ExprKind k, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line;
    return e;
  }

  // Statements up to one of `ends` (the end tag's name goes to *end, its
  // block-begin and name consumed).
  Body ParseBody(const std::vector<std::string>& ends, std::string* end) {
    Nest n(this);
    Body body;
    while (true) {
      const Token& t = Cur();
      if (t.type == Tok::kEof) {
        if (!ends.empty()) {
          std::string tags;
          for (const std::string& e : ends) tags += (tags.empty() ? "'" : " or '") + e + "'";
          SyntaxError(t.line, "Unexpected end of template. Jinja was looking for the following tags: " + tags + ".");
        }
        return body;
      }
      if (t.type == Tok::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kText;
        s->line = t.line;
        s->text = t.value;
        body.push_back(std::move(s));
        ++pos_;
      } else if (t.type == Tok::kVarBegin) {
        auto s = std::make_unique<Stmt>();
        s->kind = StmtKind::kOutput;
        s->line = t.line;
        ++pos_;
        s->expr = ParseTuple(true);
        if (Cur().type != Tok::kVarEnd) Expected("end of print statement");
        ++pos_;
        body.push_back(std::move(s));
      } else if (t.type == Tok::kBlockBegin) {
        const Token& name = Peek();
        if (name.type == Tok::kName && std::find(ends.begin(), ends.end(), name.value) != ends.end()) {
          pos_ += 2;
          *end = name.value;
          return body;
        }
        ++pos_;
        body.push_back(ParseStatement());
      } else {
        SyntaxError(t.line, "unexpected " + Describe(t));
      }
    }
  }

  std::unique_ptr<Stmt> ParseStatement() {
    if (Cur().type != Tok::kName) SyntaxError(Cur().line, "tag name expected");
    int line = Cur().line;
    std::string tag = Next().value;
    auto s = std::make_unique<Stmt>();
    s->line = line;
    if (tag == "for") return ParseFor(std::move(s));
    if (tag == "if") return ParseIf(std::move(s));
    if (tag == "set") return ParseSet(std::move(s));
    if (tag == "macro") return ParseMacro(std::move(s));
    if (tag == "filter") {
      s->kind = StmtKind::kFilterBlock;
      ParseFilterChain(s.get(), false);
      ExpectBlockEnd();
      std::string end;
      s->body = ParseBody({"endfilter"}, &end);
      ExpectBlockEnd();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      if (loops_ == 0) SyntaxError(line, "'" + tag + "' outside of a for loop");
      s->kind = tag == "break" ? StmtKind::kBreak : StmtKind::kContinue;
      ExpectBlockEnd();
      return s;
    }
    if (tag == "generation") {  // transformers' AssistantTracker: the body, rendered as is
      s->kind = StmtKind::kIf;
      ExpectBlockEnd();
      std::string end;
      Body body = ParseBody({"endgeneration"}, &end);
      ExpectBlockEnd();
      s->branches.emplace_back(nullptr, std::move(body));
      return s;
    }
    static const char* kUnsupported[] = {"call", "include", "import", "from", "extends", "block",
                                         "with", "autoescape", "do", "trans", "pluralize"};
    for (const char* u : kUnsupported)
      if (tag == u) Unsupported("{% " + tag + " %} (line " + std::to_string(line) + ")");
    SyntaxError(line, "Encountered unknown tag '" + tag + "'.");
  }

  std::unique_ptr<Stmt> ParseFor(std::unique_ptr<Stmt> s) {
    s->kind = StmtKind::kFor;
    bool paren = SkipOp("(");
    s->targets.push_back(ExpectName());
    while (SkipOp(",")) {
      s->tuple_target = true;
      if (IsName("in") || IsOp(")")) break;
      s->targets.push_back(ExpectName());
    }
    if (paren) {
      ExpectOp(")");
      s->tuple_target = s->tuple_target || s->targets.size() > 1;
    }
    if (!SkipName("in")) Expected("'in'");
    s->expr = ParseTuple(false);
    if (SkipName("if")) s->cond = ParseExpression(true);
    if (IsName("recursive")) Unsupported("recursive for loops");
    ExpectBlockEnd();
    ++loops_;
    std::string end;
    s->body = ParseBody({"endfor", "else"}, &end);
    --loops_;
    if (end == "else") {
      ExpectBlockEnd();
      s->else_body = ParseBody({"endfor"}, &end);
    }
    ExpectBlockEnd();
    return s;
  }

  std::unique_ptr<Stmt> ParseIf(std::unique_ptr<Stmt> s) {
    s->kind = StmtKind::kIf;
    ExprP cond = ParseTuple(false);
    while (true) {
      ExpectBlockEnd();
      std::string end;
      Body body = ParseBody({"elif", "else", "endif"}, &end);
      s->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "elif") {
        cond = ParseTuple(false);
        continue;
      }
      if (end == "else") {
        ExpectBlockEnd();
        s->branches.emplace_back(nullptr, ParseBody({"endif"}, &end));
      }
      ExpectBlockEnd();
      return s;
    }
  }

  std::unique_ptr<Stmt> ParseSet(std::unique_ptr<Stmt> s) {
    int line = Cur().line;
    std::string name = ExpectName();
    if (SkipOp(".")) {
      s->kind = StmtKind::kSetAttr;
      s->object = Node(ExprKind::kName, line);
      s->object->name = name;
      s->attr = ExpectName();
      ExpectOp("=");
      s->expr = ParseTuple(true);
      ExpectBlockEnd();
      return s;
    }
    s->targets.push_back(name);
    while (SkipOp(",")) {
      s->tuple_target = true;
      if (IsOp("=")) break;
      s->targets.push_back(ExpectName());
    }
    if (SkipOp("=")) {
      s->kind = StmtKind::kSet;
      s->expr = ParseTuple(true);
      ExpectBlockEnd();
      return s;
    }
    if (s->tuple_target) Expected("'='");
    s->kind = StmtKind::kSetBlock;
    if (SkipOp("|")) ParseFilterChain(s.get(), true);
    ExpectBlockEnd();
    std::string end;
    s->body = ParseBody({"endset"}, &end);
    ExpectBlockEnd();
    return s;
  }

  std::unique_ptr<Stmt> ParseMacro(std::unique_ptr<Stmt> s) {
    s->kind = StmtKind::kMacro;
    s->text = ExpectName();
    ExpectOp("(");
    while (!IsOp(")")) {
      if (!s->params.empty()) ExpectOp(",");
      if (IsOp(")")) break;
      std::string p = ExpectName();
      ExprP def;
      if (SkipOp("=")) def = ParseExpression(true);
      else if (!s->params.empty() && s->params.back().second)
        SyntaxError(Cur().line, "non-default argument follows default argument");
      s->params.emplace_back(p, std::move(def));
    }
    ExpectOp(")");
    ExpectBlockEnd();
    macros_.push_back(s.get());
    int loops = loops_;
    loops_ = 0;
    std::string end;
    s->body = ParseBody({"endmacro"}, &end);
    loops_ = loops;
    macros_.pop_back();
    if (Cur().type == Tok::kName) ++pos_;  // {% endmacro name %}
    ExpectBlockEnd();
    return s;
  }

  // `name(args) | name ...` for {% filter %} and {% set x | f %}; each filter
  // call has a null subject.
  void ParseFilterChain(Stmt* s, bool after_pipe) {
    do {
      s->filters.push_back(ParseFilter(nullptr));
    } while (SkipOp("|"));
  }

  ExprP ParseTuple(bool with_condexpr) {
    int line = Cur().line;
    std::vector<ExprP> items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) ExpectOp(",");
      if (Cur().type == Tok::kVarEnd || Cur().type == Tok::kBlockEnd || IsOp(")")) break;
      items.push_back(ParseExpression(with_condexpr));
      if (IsOp(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (items.empty()) Expected("an expression");
      return std::move(items[0]);
    }
    ExprP t = Node(ExprKind::kTuple, line);
    t->args = std::move(items);
    return t;
  }

  // Nesting is bounded so that a hostile template cannot overflow the stack.
  struct Nest {
    explicit Nest(Parser* p) : p(p) {
      if (++p->depth_ > 200) SyntaxError(p->Cur().line, "expressions or blocks nested more than 200 deep");
    }
    ~Nest() { --p->depth_; }
    Parser* p;
  };

  ExprP ParseExpression(bool with_condexpr) {
    Nest n(this);
    return with_condexpr ? ParseCondExpr() : ParseOr();
  }

  ExprP ParseCondExpr() {
    ExprP e = ParseOr();
    while (IsName("if")) {
      int line = Next().line;
      ExprP cond = ParseOr();
      ExprP other;
      if (SkipName("else")) other = ParseCondExpr();
      ExprP c = Node(ExprKind::kCond, line);
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  ExprP Pair(ExprKind k, ExprP a, ExprP b, int line, std::string name = "") {
    ExprP e = Node(k, line);
    e->name = std::move(name);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprP ParseOr() {
    ExprP e = ParseAnd();
    while (IsName("or")) {
      int line = Next().line;
      e = Pair(ExprKind::kOr, std::move(e), ParseAnd(), line);
    }
    return e;
  }

  ExprP ParseAnd() {
    ExprP e = ParseNot();
    while (IsName("and")) {
      int line = Next().line;
      e = Pair(ExprKind::kAnd, std::move(e), ParseNot(), line);
    }
    return e;
  }

  ExprP ParseNot() {
    if (IsName("not")) {
      Nest n(this);
      ExprP e = Node(ExprKind::kNot, Next().line);
      e->args.push_back(ParseNot());
      return e;
    }
    return ParseCompare();
  }

  ExprP ParseCompare() {
    int line = Cur().line;
    ExprP first = ParseMath1();
    ExprP cmp;
    while (true) {
      std::string op;
      if (Cur().type == Tok::kOp &&
          (IsOp("==") || IsOp("!=") || IsOp("<") || IsOp(">") || IsOp("<=") || IsOp(">="))) {
        op = Next().value;
      } else if (IsName("in")) {
        ++pos_;
        op = "in";
      } else if (IsName("not") && Peek().type == Tok::kName && Peek().value == "in") {
        pos_ += 2;
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = Node(ExprKind::kCompare, line);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(ParseMath1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprP ParseMath1() {
    ExprP e = ParseConcat();
    while (IsOp("+") || IsOp("-")) {
      Token t = Next();
      e = Pair(ExprKind::kBinary, std::move(e), ParseConcat(), t.line, t.value);
    }
    return e;
  }

  ExprP ParseConcat() {
    ExprP e = ParseMath2();
    if (!IsOp("~")) return e;
    ExprP c = Node(ExprKind::kConcat, Cur().line);
    c->args.push_back(std::move(e));
    while (SkipOp("~")) c->args.push_back(ParseMath2());
    return c;
  }

  ExprP ParseMath2() {
    ExprP e = ParsePow();
    while (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%")) {
      Token t = Next();
      e = Pair(ExprKind::kBinary, std::move(e), ParsePow(), t.line, t.value);
    }
    return e;
  }

  ExprP ParsePow() {
    ExprP e = ParseUnary(true);
    while (IsOp("**")) {
      Token t = Next();
      e = Pair(ExprKind::kBinary, std::move(e), ParseUnary(true), t.line, t.value);
    }
    return e;
  }

  ExprP ParseUnary(bool with_filter) {
    ExprP e;
    if (IsOp("-") || IsOp("+")) {
      Nest n(this);
      Token t = Next();
      e = Node(t.value == "-" ? ExprKind::kNeg : ExprKind::kPos, t.line);
      e->args.push_back(ParseUnary(false));
    } else {
      e = ParsePrimary();
    }
    e = ParsePostfix(std::move(e));
    if (with_filter) e = ParseFilterExpr(std::move(e));
    return e;
  }

  ExprP Literal(Value v, int line) {
    ExprP e = Node(ExprKind::kLiteral, line);
    e->literal = std::move(v);
    return e;
  }

  ExprP ParsePrimary() {
    const Token& t = Cur();
    int line = t.line;
    switch (t.type) {
      case Tok::kName: {
        std::string n = Next().value;
        if (n == "true" || n == "True") return Literal(Value::Bool(true), line);
        if (n == "false" || n == "False") return Literal(Value::Bool(false), line);
        if (n == "none" || n == "None") return Literal(Value::None(), line);
        if (!macros_.empty() && n == "varargs") macros_.back()->uses_varargs = true;
        if (!macros_.empty() && n == "kwargs") macros_.back()->uses_kwargs = true;
        if (!macros_.empty() && n == "caller") Unsupported("caller() in macros (line " + std::to_string(line) + ")");
        ExprP e = Node(ExprKind::kName, line);
        e->name = n;
        return e;
      }
      case Tok::kString: {
        std::string s;
        while (Cur().type == Tok::kString) s += Next().value;
        return Literal(Value::Str(std::move(s)), line);
      }
      case Tok::kInt: return Literal(Value::Int(Next().i), line);
      case Tok::kFloat: return Literal(Value::Float(Next().f), line);
      case Tok::kOp:
        if (SkipOp("(")) {
          if (SkipOp(")")) return Node(ExprKind::kTuple, line);
          ExprP e = ParseTupleInParens(line);
          ExpectOp(")");
          return e;
        }
        if (SkipOp("[")) {
          ExprP e = Node(ExprKind::kList, line);
          while (!IsOp("]")) {
            if (!e->args.empty()) ExpectOp(",");
            if (IsOp("]")) break;
            e->args.push_back(ParseExpression(true));
          }
          ExpectOp("]");
          return e;
        }
        if (SkipOp("{")) {
          ExprP e = Node(ExprKind::kDict, line);
          while (!IsOp("}")) {
            if (!e->args.empty()) ExpectOp(",");
            if (IsOp("}")) break;
            e->args.push_back(ParseExpression(true));
            ExpectOp(":");
            e->args.push_back(ParseExpression(true));
          }
          ExpectOp("}");
          return e;
        }
        break;
      default: break;
    }
    SyntaxError(line, "unexpected " + Describe(t));
  }

  ExprP ParseTupleInParens(int line) {
    ExprP first = ParseExpression(true);
    if (!IsOp(",")) return first;
    ExprP t = Node(ExprKind::kTuple, line);
    t->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (IsOp(")")) break;
      t->args.push_back(ParseExpression(true));
    }
    return t;
  }

  ExprP ParsePostfix(ExprP e) {
    while (true) {
      int line = Cur().line;
      if (SkipOp(".")) {
        if (Cur().type == Tok::kInt) {
          e = Pair(ExprKind::kGetItem, std::move(e), Literal(Value::Int(Next().i), line), line);
        } else {
          ExprP a = Node(ExprKind::kGetAttr, line);
          a->name = ExpectName();
          a->args.push_back(std::move(e));
          e = std::move(a);
        }
      } else if (SkipOp("[")) {
        e = ParseSubscript(std::move(e), line);
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprP ParseSubscript(ExprP obj, int line) {
    std::vector<ExprP> parts(3);
    int n = 0;
    bool slice = false;
    while (!IsOp("]")) {
      if (IsOp(":")) {
        ++pos_;
        if (++n > 2) Expected("']'");
        slice = true;
        continue;
      }
      if (parts[n]) Expected("']'");
      parts[n] = slice || n ? ParseExpression(true) : ParseTupleInSubscript(line);
    }
    ExpectOp("]");
    if (!slice) {
      if (!parts[0]) Expected("an index");
      return Pair(ExprKind::kGetItem, std::move(obj), std::move(parts[0]), line);
    }
    ExprP e = Node(ExprKind::kSlice, line);
    e->args.push_back(std::move(obj));
    for (auto& p : parts) e->args.push_back(std::move(p));
    return e;
  }

  ExprP ParseTupleInSubscript(int line) {
    ExprP first = ParseExpression(true);
    if (!IsOp(",")) return first;
    ExprP t = Node(ExprKind::kTuple, line);
    t->args.push_back(std::move(first));
    while (SkipOp(",")) {
      if (IsOp("]")) break;
      t->args.push_back(ParseExpression(true));
    }
    return t;
  }

  // Appends `(a, b, k=v)` to e's args/kwargs.
  void ParseCallArgs(Expr* e) {
    ExpectOp("(");
    bool first = true;
    while (!IsOp(")")) {
      if (!first) ExpectOp(",");
      first = false;
      if (IsOp(")")) break;
      if (IsOp("*") || IsOp("**")) Unsupported("*args and **kwargs in calls (line " + std::to_string(Cur().line) + ")");
      if (Cur().type == Tok::kName && Peek().type == Tok::kOp && Peek().value == "=") {
        std::string k = Next().value;
        ++pos_;
        e->kwargs.emplace_back(k, ParseExpression(true));
      } else {
        if (!e->kwargs.empty()) SyntaxError(Cur().line, "invalid syntax for function call expression");
        e->args.push_back(ParseExpression(true));
      }
    }
    ExpectOp(")");
  }

  ExprP ParseCall(ExprP callee) {
    ExprP e = Node(ExprKind::kCall, Cur().line);
    e->args.push_back(std::move(callee));
    ParseCallArgs(e.get());
    return e;
  }

  std::string DottedName() {
    std::string n = ExpectName();
    while (IsOp(".") && Peek().type == Tok::kName) {
      ++pos_;
      n += '.';
      n += Next().value;
    }
    return n;
  }

  ExprP ParseFilter(ExprP subject) {
    int line = Cur().line;
    ExprP e = Node(ExprKind::kFilter, line);
    e->name = DottedName();
    if (!KnownFilter(e->name)) SyntaxError(line, "No filter named '" + e->name + "'.");
    e->args.push_back(std::move(subject));
    if (IsOp("(")) ParseCallArgs(e.get());
    return e;
  }

  ExprP ParseFilterExpr(ExprP e) {
    while (true) {
      if (SkipOp("|")) {
        e = ParseFilter(std::move(e));
      } else if (IsName("is")) {
        e = ParseTest(std::move(e));
      } else if (IsOp("(")) {
        e = ParseCall(std::move(e));
      } else {
        return e;
      }
    }
  }

  ExprP ParseTest(ExprP subject) {
    int line = Next().line;
    ExprP e = Node(ExprKind::kTest, line);
    e->negated = SkipName("not");
    e->name = DottedName();
    if (!KnownTest(e->name)) SyntaxError(line, "No test named '" + e->name + "'.");
    e->args.push_back(std::move(subject));
    const Token& t = Cur();
    if (IsOp("(")) {
      ParseCallArgs(e.get());
    } else if ((t.type == Tok::kName && t.value != "else" && t.value != "or" && t.value != "and" && t.value != "is") ||
               t.type == Tok::kString || t.type == Tok::kInt || t.type == Tok::kFloat || IsOp("[") || IsOp("{")) {
      e->args.push_back(ParsePostfix(ParsePrimary()));
    }
    return e;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int loops_ = 0, depth_ = 0;
  std::vector<Stmt*> macros_;
};

}  // namespace

std::unique_ptr<Program> ParseProgram(std::string_view source) {
  return Parser(Lexer(Normalise(source)).Run()).Run();
}

}  // namespace strata::jinja::internal
