// Jinja values with Python's semantics: truth, equality, ordering, str() and
// repr() (floats as Python prints them), iteration, len(), json.dumps, and the
// conversion from JSON.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "jinja_internal.h"

namespace strata::jinja::internal {

Value Value::Undefined(std::string message) {
  Value v;
  v.s = std::make_shared<const std::string>(std::move(message));
  return v;
}
Value Value::None() {
  Value v;
  v.kind = Kind::kNone;
  return v;
}
Value Value::Bool(bool b) {
  Value v;
  v.kind = Kind::kBool;
  v.b = b;
  v.i = b;
  return v;
}
Value Value::Int(int64_t i) {
  Value v;
  v.kind = Kind::kInt;
  v.i = i;
  return v;
}
Value Value::Float(double f) {
  Value v;
  v.kind = Kind::kFloat;
  v.f = f;
  return v;
}
Value Value::Str(std::string s, bool markup) {
  Value v;
  v.kind = Kind::kString;
  v.markup = markup;
  v.s = std::make_shared<const std::string>(std::move(s));
  return v;
}
Value Value::List(std::vector<Value> items, Seq seq) {
  Value v;
  v.kind = Kind::kList;
  v.list = std::make_shared<ListObj>();
  v.list->items = std::move(items);
  v.list->seq = seq;
  return v;
}
Value Value::Dict() {
  Value v;
  v.kind = Kind::kDict;
  v.dict = std::make_shared<DictObj>();
  return v;
}
Value Value::Namespace() {
  Value v = Dict();
  v.kind = Kind::kNamespace;
  return v;
}
Value Value::Func(std::string name, std::function<Value(Interp&, Args&)> call) {
  Value v;
  v.kind = Kind::kFunc;
  v.fn = std::make_shared<FuncObj>(FuncObj{std::move(name), std::move(call)});
  return v;
}

const Value* DictObj::Find(const Value& key) const {
  for (const auto& [k, v] : items)
    if (Equal(k, key)) return &v;
  return nullptr;
}

const Value* DictObj::Find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k.kind == Kind::kString && *k.s == key) return &v;
  return nullptr;
}

void DictObj::Set(const Value& key, Value v) {
  for (auto& kv : items)
    if (Equal(kv.first, key)) {
      kv.second = std::move(v);
      return;
    }
  items.emplace_back(key, std::move(v));
}

void Fail(const std::string& message) { throw TemplateError(message); }

void Unsupported(const std::string& what) { throw TemplateError("unsupported Jinja feature: " + what); }

void FailUndefined(const Value& v) {
  Fail(v.s && !v.s->empty() ? *v.s : std::string("value is undefined"));
}

std::string TypeName(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return v.markup ? "Markup" : "str";
    case Kind::kDict: return "dict";
    case Kind::kNamespace: return v.dict->loop ? "LoopContext" : "Namespace";
    case Kind::kFunc: return v.fn->name == "macro" ? "Macro" : "builtin_function_or_method";
    case Kind::kList:
      switch (v.list->seq) {
        case Seq::kList: return "list";
        case Seq::kTuple: return "tuple";
        case Seq::kIterator: return "generator";
        case Seq::kDictItems: return "dict_items";
        case Seq::kDictKeys: return "dict_keys";
        case Seq::kDictValues: return "dict_values";
        case Seq::kRange: return "range";
      }
  }
  return "object";
}

std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.kind == Kind::kString && v.markup) return "markupsafe.Markup object";
  if (v.kind == Kind::kNamespace) return v.dict->loop ? "jinja2.runtime.LoopContext object" : "jinja2.utils.Namespace object";
  if (v.kind == Kind::kFunc && v.fn->name == "macro") return "jinja2.runtime.Macro object";
  return TypeName(v) + " object";
}

bool Truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.b;
    case Kind::kInt: return v.i != 0;
    case Kind::kFloat: return v.f != 0;
    case Kind::kString: return !v.s->empty();
    case Kind::kList: return v.list->seq == Seq::kIterator || !v.list->items.empty();
    case Kind::kDict: return !v.dict->items.empty();
    default: return true;
  }
}

static double AsDouble(const Value& v) { return v.kind == Kind::kFloat ? v.f : static_cast<double>(v.i); }

bool Equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) return a.i == b.i;
    return AsDouble(a) == AsDouble(b);
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return *a.s == *b.s;
    case Kind::kList: {
      if (a.list == b.list) return true;
      if (a.list->seq != b.list->seq || a.list->seq == Seq::kIterator) return false;
      const auto &x = a.list->items, &y = b.list->items;
      if (x.size() != y.size()) return false;
      for (size_t k = 0; k < x.size(); ++k)
        if (!Equal(x[k], y[k])) return false;
      return true;
    }
    case Kind::kDict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* w = b.dict->Find(k);
        if (!w || !Equal(v, *w)) return false;
      }
      return true;
    }
    case Kind::kNamespace: return a.dict == b.dict;
    case Kind::kFunc: return a.fn == b.fn;
    default: return false;
  }
}

int Order(const Value& a, const Value& b, const char* op) {
  if (a.is_undefined()) FailUndefined(a);
  if (b.is_undefined()) FailUndefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) return a.i < b.i ? -1 : a.i > b.i;
    double x = AsDouble(a), y = AsDouble(b);
    return x < y ? -1 : x > y;
  }
  if (a.is_string() && b.is_string()) return a.s->compare(*b.s) < 0 ? -1 : *a.s != *b.s;  // UTF-8 order is code point order
  if (a.is_list() && b.is_list() && a.list->seq == b.list->seq &&
      (a.list->seq == Seq::kList || a.list->seq == Seq::kTuple)) {
    const auto &x = a.list->items, &y = b.list->items;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (Equal(x[k], y[k])) continue;
      return Order(x[k], y[k], op);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size();
  }
  Fail(std::string("'") + op + "' not supported between instances of '" + TypeName(a) + "' and '" + TypeName(b) + "'");
}

bool Less(const Value& a, const Value& b) { return Order(a, b, "<") < 0; }

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  size_t e = sci.find('e');
  int exp = std::stoi(sci.substr(e + 1));
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c != '.') digits += c;
  if (exp < -4 || exp >= 16) {
    std::string out = sign + digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    return out + eb;
  }
  if (exp < 0) return sign + "0." + std::string(-exp - 1, '0') + digits;
  if (digits.size() <= static_cast<size_t>(exp) + 1) return sign + digits + std::string(exp + 1 - digits.size(), '0') + ".0";
  return sign + digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
}

std::u32string Utf8ToU32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t k = 0; k < s.size();) {
    unsigned char c = s[k];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (k + n > s.size()) n = 1;
    char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
    for (int j = 1; j < n; ++j) cp = (cp << 6) | (static_cast<unsigned char>(s[k + j]) & 0x3f);
    out.push_back(cp);
    k += n;
  }
  return out;
}

std::string U32ToUtf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else if (c < 0x800) {
      out += static_cast<char>(0xc0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out += static_cast<char>(0xe0 | (c >> 12));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (c >> 18));
      out += static_cast<char>(0x80 | ((c >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((c >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return out;
}

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xc0) != 0x80;
  return n;
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&#39;"; break;
      case '"': out += "&#34;"; break;
      default: out += c;
    }
  }
  return out;
}

// str.isprintable() for code points past ASCII: the separators, format and
// control characters, surrogates and private use areas Python escapes.
static bool Printable(char32_t c) {
  if (c < 0xa1 || c == 0xad) return false;
  if (c == 0x061c || c == 0x1680 || c == 0x180e || c == 0x3000 || c == 0xfeff) return false;
  if ((c >= 0x2000 && c <= 0x200f) || (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f)) return false;
  if ((c >= 0xd800 && c <= 0xf8ff) || (c >= 0xfff9 && c <= 0xfffb) || c == 0xfffe || c == 0xffff) return false;
  if (c >= 0xe0000) return false;
  return true;
}

static std::string StrRepr(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  char buf[16];
  for (char32_t c : Utf8ToU32(s)) {
    if (c == static_cast<char32_t>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c == 0x7f) {
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(c));
      out += buf;
    } else if (c < 0x7f) {
      out += static_cast<char>(c);
    } else if (!Printable(c)) {
      std::snprintf(buf, sizeof buf, c <= 0xff ? "\\x%02x" : c <= 0xffff ? "\\u%04x" : "\\U%08x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += U32ToUtf8(std::u32string(1, c));
    }
  }
  return out + q;
}

static std::string JoinRepr(const std::vector<Value>& items) {
  std::string out;
  for (size_t k = 0; k < items.size(); ++k) out += (k ? ", " : "") + Repr(items[k]);
  return out;
}

static std::string DictRepr(const DictObj& d) {
  std::string out = "{";
  for (size_t k = 0; k < d.items.size(); ++k)
    out += (k ? ", " : "") + Repr(d.items[k].first) + ": " + Repr(d.items[k].second);
  return out + "}";
}

std::string Repr(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kString: return v.markup ? "Markup(" + StrRepr(*v.s) + ")" : StrRepr(*v.s);
    case Kind::kList: {
      const auto& items = v.list->items;
      switch (v.list->seq) {
        case Seq::kList: return "[" + JoinRepr(items) + "]";
        case Seq::kTuple: return "(" + JoinRepr(items) + (items.size() == 1 ? ",)" : ")");
        case Seq::kDictItems: return "dict_items([" + JoinRepr(items) + "])";
        case Seq::kDictKeys: return "dict_keys([" + JoinRepr(items) + "])";
        case Seq::kDictValues: return "dict_values([" + JoinRepr(items) + "])";
        default: Unsupported("printing a " + TypeName(v) + " (Python prints its address); convert it with |list");
      }
    }
    case Kind::kDict: return DictRepr(*v.dict);
    case Kind::kNamespace:
      if (v.dict->loop) Unsupported("printing a loop object");
      return "<Namespace " + DictRepr(*v.dict) + ">";
    case Kind::kFunc: Unsupported("printing a function (Python prints its address)");
    default: return ToStr(v);
  }
}

std::string ToStr(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return v.b ? "True" : "False";
    case Kind::kInt: return std::to_string(v.i);
    case Kind::kFloat: return FloatRepr(v.f);
    case Kind::kString: return *v.s;
    default: return Repr(v);
  }
}

static std::vector<Value> Chars(const std::string& s) {
  std::vector<Value> out;
  for (size_t k = 0; k < s.size();) {
    size_t n = 1;
    while (k + n < s.size() && (static_cast<unsigned char>(s[k + n]) & 0xc0) == 0x80) ++n;
    out.push_back(Value::Str(s.substr(k, n)));
    k += n;
  }
  return out;
}

std::vector<Value> Iterate(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return {};
    case Kind::kString: return Chars(*v.s);
    case Kind::kList:
      if (v.list->seq == Seq::kIterator) {
        if (v.list->consumed) return {};
        v.list->consumed = true;
      }
      return v.list->items;
    case Kind::kDict: {
      std::vector<Value> keys;
      for (const auto& kv : v.dict->items) keys.push_back(kv.first);
      return keys;
    }
    default: Fail("'" + TypeName(v) + "' object is not iterable");
  }
}

int64_t Length(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return 0;
    case Kind::kString: return static_cast<int64_t>(CodePoints(*v.s));
    case Kind::kList:
      if (v.list->seq == Seq::kIterator) break;
      return static_cast<int64_t>(v.list->items.size());
    case Kind::kDict: return static_cast<int64_t>(v.dict->items.size());
    default: break;
  }
  Fail("object of type '" + TypeName(v) + "' has no len()");
}

// json.dumps of a string: ensure_ascii escapes every code point past ASCII
// (astral ones as surrogate pairs); control characters are always escaped.
static void JsonString(const std::string& s, bool ascii, std::string& out) {
  out += '"';
  char buf[16];
  for (char32_t c : Utf8ToU32(s)) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || (ascii && c >= 0x80 && c < 0x10000)) {
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else if (ascii && c >= 0x10000) {
          char32_t v = c - 0x10000;
          std::snprintf(buf, sizeof buf, "\\u%04x\\u%04x", static_cast<unsigned>(0xd800 + (v >> 10)),
                        static_cast<unsigned>(0xdc00 + (v & 0x3ff)));
          out += buf;
        } else {
          out += U32ToUtf8(std::u32string(1, c));
        }
    }
  }
  out += '"';
}

static std::string JsonFloat(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d < 0 ? "-Infinity" : "Infinity";
  return FloatRepr(d);
}

static void Dump(const Value& v, const DumpOptions& o, int level, std::string& out) {
  auto newline = [&](int lvl) {
    if (o.indent >= 0) out += "\n" + std::string(static_cast<size_t>(o.indent) * lvl, ' ');
  };
  switch (v.kind) {
    case Kind::kNone: out += "null"; return;
    case Kind::kBool: out += v.b ? "true" : "false"; return;
    case Kind::kInt: out += std::to_string(v.i); return;
    case Kind::kFloat: out += JsonFloat(v.f); return;
    case Kind::kString: JsonString(*v.s, o.ensure_ascii, out); return;
    case Kind::kList: {
      if (v.list->seq != Seq::kList && v.list->seq != Seq::kTuple) break;
      const auto& items = v.list->items;
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += o.item_sep;
        newline(level + 1);
        Dump(items[k], o, level + 1, out);
      }
      newline(level);
      out += ']';
      return;
    }
    case Kind::kDict: {
      std::vector<std::pair<std::string, const Value*>> items;
      for (const auto& [k, val] : v.dict->items) {
        std::string key;
        switch (k.kind) {
          case Kind::kString: key = *k.s; break;
          case Kind::kNone: key = "null"; break;
          case Kind::kBool: key = k.b ? "true" : "false"; break;
          case Kind::kInt: key = std::to_string(k.i); break;
          case Kind::kFloat: key = JsonFloat(k.f); break;
          default: Fail("keys must be str, int, float, bool or None, not " + TypeName(k));
        }
        items.emplace_back(std::move(key), &val);
      }
      if (o.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      if (items.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += o.item_sep;
        newline(level + 1);
        JsonString(items[k].first, o.ensure_ascii, out);
        out += o.key_sep;
        Dump(*items[k].second, o, level + 1, out);
      }
      newline(level);
      out += '}';
      return;
    }
    default: break;
  }
  Fail("Object of type " + TypeName(v) + " is not JSON serializable");
}

std::string DumpJson(const Value& v, const DumpOptions& o) {
  std::string out;
  Dump(v, o, 0, out);
  return out;
}

template <typename J>
static Value Convert(const J& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return Value::None();
    case nlohmann::json::value_t::boolean: return Value::Bool(j.template get<bool>());
    case nlohmann::json::value_t::number_integer: return Value::Int(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      uint64_t u = j.template get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) Unsupported("integers past 64 bits");
      return Value::Int(static_cast<int64_t>(u));
    }
    case nlohmann::json::value_t::number_float: return Value::Float(j.template get<double>());
    case nlohmann::json::value_t::string: return Value::Str(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(Convert(e));
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Value d = Value::Dict();
      d.dict->items.reserve(j.size());
      for (auto it = j.begin(); it != j.end(); ++it) d.dict->items.emplace_back(Value::Str(it.key()), Convert(it.value()));
      return d;
    }
    default: Fail("a template variable holds binary JSON, which templates cannot use");
  }
}

Value FromJson(const Json& j) { return Convert(j); }
Value FromJson(const nlohmann::ordered_json& j) { return Convert(j); }

}  // namespace strata::jinja::internal
