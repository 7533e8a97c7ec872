// What templates call: jinja2's filters and tests, the str/dict/list methods
// of Python that the sandbox allows, the operators, attribute and item lookup
// as jinja2's sandbox does them, and the globals transformers provides.
//
// Filters: abs capitalize count d default dictsort e escape first float indent
//   int items join last length list lower map max min reject rejectattr replace
//   reverse round safe select selectattr sort string sum title tojson trim
//   unique upper.
// Tests: boolean callable defined divisibleby eq equalto escaped even false
//   filter float ge gt greaterthan in integer iterable le lower lt lessthan
//   mapping ne none number odd sameas sequence string test true undefined upper,
//   and the operator names (==, !=, <, <=, >, >=).
// str methods: capitalize count endswith find join lower lstrip removeprefix
//   removesuffix replace rfind rsplit rstrip split splitlines startswith strip
//   title upper isalnum isalpha isdigit islower isspace isupper.
// dict methods: copy get items keys values. list methods: copy count index.
// Globals: dict namespace range raise_exception strftime_now.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>

#include "jinja_internal.h"

namespace strata::jinja::internal {
namespace {

// --- arguments ---

// Positional and keyword arguments matched to parameter names, Python style.
class Params {
 public:
  Params(const std::string& fn, Args& a, std::vector<const char*> names) : fn_(fn), a_(a), names_(std::move(names)) {
    if (a.pos.size() > names_.size())
      Fail(fn + "() takes at most " + std::to_string(names_.size()) + " argument(s) (" + std::to_string(a.pos.size()) +
           " given)");
    for (const auto& [k, v] : a.kw) {
      auto it = std::find_if(names_.begin(), names_.end(), [&](const char* n) { return k == n; });
      if (it == names_.end()) Fail(fn + "() got an unexpected keyword argument '" + k + "'");
      if (static_cast<size_t>(it - names_.begin()) < a.pos.size())
        Fail(fn + "() got multiple values for argument '" + k + "'");
    }
  }
  const Value* Get(size_t k) const {
    if (k < a_.pos.size()) return &a_.pos[k];
    for (const auto& [n, v] : a_.kw)
      if (n == names_[k]) return &v;
    return nullptr;
  }
  Value Or(size_t k, Value def) const {
    const Value* v = Get(k);
    return v ? *v : def;
  }
  bool Flag(size_t k, bool def) const {
    const Value* v = Get(k);
    return v ? Truthy(*v) : def;
  }

 private:
  std::string fn_;
  Args& a_;
  std::vector<const char*> names_;
};

int64_t AsInt(const Value& v, const std::string& what) {
  if (v.kind == Kind::kInt || v.kind == Kind::kBool) return v.i;
  Fail("'" + TypeName(v) + "' object cannot be interpreted as an integer (" + what + ")");
}

const std::string& AsStr(const Value& v, const std::string& what) {
  if (!v.is_string()) Fail(what + " must be str, not " + TypeName(v));
  return *v.s;
}

// --- text ---

bool PySpace(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// Code points past ASCII whose case Python would change: strata does not map them.
bool NonAsciiCased(char32_t c) {
  return c == 0xb5 || (c >= 0xc0 && c <= 0x24f && c != 0xd7 && c != 0xf7) || (c >= 0x250 && c <= 0x2af) ||
         (c >= 0x370 && c <= 0x58f) || (c >= 0x10a0 && c <= 0x10ff) || (c >= 0x13a0 && c <= 0x13ff) ||
         (c >= 0x1c80 && c <= 0x1cbf) || (c >= 0x1d00 && c <= 0x1fff) || (c >= 0x2100 && c <= 0x218f) ||
         (c >= 0x24b6 && c <= 0x24e9) || (c >= 0x2c00 && c <= 0x2d2f) || (c >= 0xa640 && c <= 0xa69f) ||
         (c >= 0xa720 && c <= 0xa7ff) || (c >= 0xab30 && c <= 0xabbf) || (c >= 0xfb00 && c <= 0xfb17) ||
         (c >= 0xff21 && c <= 0xff5a) || (c >= 0x10400 && c <= 0x104ff) || (c >= 0x10c80 && c <= 0x10cff) ||
         (c >= 0x118a0 && c <= 0x118ff) || (c >= 0x16e40 && c <= 0x16e9f) || (c >= 0x1e900 && c <= 0x1e94f);
}

void CheckCaseable(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) {
      for (char32_t cp : Utf8ToU32(s))
        if (NonAsciiCased(cp)) Unsupported("changing the case of non-ASCII letters");
      return;
    }
}

bool AsciiUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool AsciiLower(char c) { return c >= 'a' && c <= 'z'; }
char ToUpper(char c) { return AsciiLower(c) ? static_cast<char>(c - 32) : c; }
char ToLower(char c) { return AsciiUpper(c) ? static_cast<char>(c + 32) : c; }

std::string Upper(std::string s) {
  CheckCaseable(s);
  for (char& c : s) c = ToUpper(c);
  return s;
}
std::string Lower(std::string s) {
  CheckCaseable(s);
  for (char& c : s) c = ToLower(c);
  return s;
}
// str.title(): a letter after a cased letter goes lower, any other upper.
std::string PyTitle(std::string s) {
  CheckCaseable(s);
  bool prev_cased = false;
  for (char& c : s) {
    bool cased = AsciiUpper(c) || AsciiLower(c);
    if (cased) c = prev_cased ? ToLower(c) : ToUpper(c);
    prev_cased = cased;
  }
  return s;
}
std::string Capitalize(std::string s) {
  CheckCaseable(s);
  for (size_t k = 0; k < s.size(); ++k) s[k] = k == 0 ? ToUpper(s[k]) : ToLower(s[k]);
  return s;
}
// jinja2's title filter: words begin after runs of - ( { [ < and whitespace.
std::string JinjaTitle(const std::string& s) {
  CheckCaseable(s);
  std::u32string u = Utf8ToU32(s), out;
  bool start = true;
  for (char32_t c : u) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || PySpace(c);
    if (sep) {
      out += c;
      start = true;
      continue;
    }
    char32_t m = c < 0x80 ? static_cast<char32_t>(start ? ToUpper(static_cast<char>(c)) : ToLower(static_cast<char>(c))) : c;
    out += m;
    start = false;
  }
  return U32ToUtf8(out);
}

std::string Strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::u32string u = Utf8ToU32(s), set;
  bool ws = chars.is_none() || chars.is_undefined();
  if (!ws) set = Utf8ToU32(AsStr(chars, "strip arg"));
  auto strip = [&](char32_t c) { return ws ? PySpace(c) : set.find(c) != std::u32string::npos; };
  size_t b = 0, e = u.size();
  if (left)
    while (b < e && strip(u[b])) ++b;
  if (right)
    while (e > b && strip(u[e - 1])) --e;
  return U32ToUtf8(std::u32string_view(u).substr(b, e - b));
}

std::string Replace(const std::string& s, const std::string& old, const std::string& rep, int64_t count) {
  std::string out;
  if (old.empty()) {  // Python inserts `rep` around every code point
    std::vector<Value> chars = Iterate(Value::Str(s));
    int64_t done = 0;
    for (const Value& c : chars) {
      if (count < 0 || done < count) out += rep, ++done;
      out += c.str();
    }
    if (count < 0 || done < count) out += rep;
    return out;
  }
  size_t p = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, p);
    if (f == std::string::npos) break;
    out.append(s, p, f - p).append(rep);
    p = f + old.size();
    ++done;
  }
  return out.append(s, p, std::string::npos);
}

std::vector<Value> Split(const std::string& s, const Value& sep, int64_t maxsplit, bool from_right) {
  std::vector<std::string> parts;
  if (sep.is_none() || sep.is_undefined()) {
    std::u32string u = Utf8ToU32(s);
    std::vector<std::pair<size_t, size_t>> words;
    for (size_t k = 0; k < u.size();) {
      while (k < u.size() && PySpace(u[k])) ++k;
      if (k == u.size()) break;
      size_t b = k;
      while (k < u.size() && !PySpace(u[k])) ++k;
      words.emplace_back(b, k);
    }
    if (maxsplit >= 0 && static_cast<int64_t>(words.size()) > maxsplit + 1) {
      if (!from_right) {  // the rest of the string after the maxsplit-th word, left-stripped
        std::vector<std::pair<size_t, size_t>> w(words.begin(), words.begin() + maxsplit);
        size_t rb = words[maxsplit].first, re = u.size();
        while (re > rb && PySpace(u[re - 1])) --re;
        w.emplace_back(rb, re);
        words = w;
      } else {
        std::vector<std::pair<size_t, size_t>> w;
        size_t first = words.size() - maxsplit;
        size_t lb = 0, le = words[first - 1].second;
        while (lb < le && PySpace(u[lb])) ++lb;
        w.emplace_back(lb, le);
        w.insert(w.end(), words.begin() + first, words.end());
        words = w;
      }
    }
    for (auto [b, e] : words) parts.push_back(U32ToUtf8(std::u32string_view(u).substr(b, e - b)));
  } else {
    const std::string& d = AsStr(sep, "separator");
    if (d.empty()) Fail("empty separator");
    std::vector<size_t> cuts;
    for (size_t p = s.find(d); p != std::string::npos; p = s.find(d, p + d.size())) cuts.push_back(p);
    if (maxsplit >= 0 && static_cast<int64_t>(cuts.size()) > maxsplit) {
      if (from_right) cuts.erase(cuts.begin(), cuts.end() - maxsplit);
      else cuts.resize(maxsplit);
    }
    size_t p = 0;
    for (size_t c : cuts) {
      parts.push_back(s.substr(p, c - p));
      p = c + d.size();
    }
    parts.push_back(s.substr(p));
  }
  std::vector<Value> out;
  for (auto& p : parts) out.push_back(Value::Str(std::move(p)));
  return out;
}

bool LineBreak(char32_t c) {
  return c == '\n' || c == '\r' || c == 0x0b || c == 0x0c || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x85 ||
         c == 0x2028 || c == 0x2029;
}

std::vector<std::string> SplitLines(const std::string& s, bool keepends) {
  std::u32string u = Utf8ToU32(s);
  std::vector<std::string> out;
  size_t b = 0;
  for (size_t k = 0; k < u.size(); ++k) {
    if (!LineBreak(u[k])) continue;
    size_t e = k + 1;
    if (u[k] == '\r' && e < u.size() && u[e] == '\n') ++e;
    out.push_back(U32ToUtf8(std::u32string_view(u).substr(b, (keepends ? e : k) - b)));
    b = e;
    k = e - 1;
  }
  if (b < u.size()) out.push_back(U32ToUtf8(std::u32string_view(u).substr(b)));
  return out;
}

std::vector<Value> Strs(std::vector<std::string> v) {
  std::vector<Value> out;
  for (auto& s : v) out.push_back(Value::Str(std::move(s)));
  return out;
}

int64_t CpIndex(const std::string& s, size_t byte) {
  return byte == std::string::npos ? -1 : static_cast<int64_t>(CodePoints(std::string_view(s).substr(0, byte)));
}

bool AffixMatch(const std::string& s, const Value& affix, bool prefix) {
  std::vector<Value> options = affix.is_list() && affix.list->seq == Seq::kTuple ? affix.list->items : std::vector<Value>{affix};
  for (const Value& o : options) {
    if (!o.is_string())
      Fail(std::string(prefix ? "startswith" : "endswith") + " first arg must be str or a tuple of str, not " + TypeName(o));
    const std::string& a = *o.s;
    if (a.size() <= s.size() && (prefix ? s.compare(0, a.size(), a) == 0 : s.compare(s.size() - a.size(), a.size(), a) == 0))
      return true;
  }
  return false;
}

template <typename Pred>
bool AllAscii(const std::string& s, Pred p) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c >= 0x80) Unsupported("str.is*() of non-ASCII text");
    if (!p(c)) return false;
  }
  return true;
}

Value StrMethod(const Value& self, const std::string& name, Args& a) {
  const std::string& s = *self.s;
  auto keep = [&](std::string r) { return Value::Str(std::move(r), self.markup); };
  if (self.markup && (name == "replace" || name == "join" || name == "split" || name == "rsplit"))
    Unsupported("str." + name + "() of a Markup string");
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    Params p(name, a, {"chars"});
    return keep(Strip(s, p.Or(0, Value::None()), name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    Params p(name, a, {"sep", "maxsplit"});
    return Value::List(Split(s, p.Or(0, Value::None()), AsInt(p.Or(1, Value::Int(-1)), "maxsplit"), name == "rsplit"));
  }
  if (name == "splitlines") {
    Params p(name, a, {"keepends"});
    return Value::List(Strs(SplitLines(s, p.Flag(0, false))));
  }
  if (name == "startswith" || name == "endswith") {
    Params p(name, a, {"prefix"});
    if (!p.Get(0)) Fail(name + "() takes at least 1 argument (0 given)");
    return Value::Bool(AffixMatch(s, *p.Get(0), name == "startswith"));
  }
  if (name == "upper") return keep(Upper(s));
  if (name == "lower") return keep(Lower(s));
  if (name == "title") return keep(PyTitle(s));
  if (name == "capitalize") return keep(Capitalize(s));
  if (name == "replace") {
    Params p(name, a, {"old", "new", "count"});
    if (!p.Get(0) || !p.Get(1)) Fail("replace() takes at least 2 arguments");
    return Value::Str(Replace(s, AsStr(*p.Get(0), "replace() argument 1"), AsStr(*p.Get(1), "replace() argument 2"),
                              AsInt(p.Or(2, Value::Int(-1)), "count")));
  }
  if (name == "find" || name == "rfind" || name == "count") {
    Params p(name, a, {"sub"});
    if (!p.Get(0)) Fail(name + "() takes at least 1 argument (0 given)");
    const std::string& sub = AsStr(*p.Get(0), "substring");
    if (name == "find") return Value::Int(CpIndex(s, s.find(sub)));
    if (name == "rfind") return Value::Int(CpIndex(s, s.rfind(sub)));
    if (sub.empty()) return Value::Int(static_cast<int64_t>(CodePoints(s)) + 1);
    int64_t n = 0;
    for (size_t f = s.find(sub); f != std::string::npos; f = s.find(sub, f + sub.size())) ++n;
    return Value::Int(n);
  }
  if (name == "removeprefix" || name == "removesuffix") {
    Params p(name, a, {"affix"});
    if (!p.Get(0)) Fail(name + "() takes exactly one argument (0 given)");
    const std::string& x = AsStr(*p.Get(0), name + "() argument");
    if (name == "removeprefix") return keep(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    return keep(x.size() <= s.size() && s.compare(s.size() - x.size(), x.size(), x) == 0 ? s.substr(0, s.size() - x.size()) : s);
  }
  if (name == "join") {
    Params p(name, a, {"iterable"});
    if (!p.Get(0)) Fail("join() takes exactly one argument (0 given)");
    std::string out;
    std::vector<Value> items = Iterate(*p.Get(0));
    for (size_t k = 0; k < items.size(); ++k) {
      if (!items[k].is_string())
        Fail("sequence item " + std::to_string(k) + ": expected str instance, " + TypeName(items[k]) + " found");
      if (k) out += s;
      out += items[k].str();
    }
    return Value::Str(std::move(out));
  }
  static const std::set<std::string> predicates = {"isdigit", "isalpha", "isalnum", "isspace", "isupper", "islower"};
  if (!predicates.count(name)) Unsupported("str." + name + "()");
  Params p(name, a, {});
  if (name == "isdigit") return Value::Bool(AllAscii(s, [](unsigned char c) { return std::isdigit(c) != 0; }));
  if (name == "isalpha") return Value::Bool(AllAscii(s, [](unsigned char c) { return std::isalpha(c) != 0; }));
  if (name == "isalnum") return Value::Bool(AllAscii(s, [](unsigned char c) { return std::isalnum(c) != 0; }));
  if (name == "isspace") return Value::Bool(AllAscii(s, [](unsigned char c) { return PySpace(c); }));
  if (name == "isupper" || name == "islower") {
    bool up = name == "isupper", any = false;
    CheckCaseable(s);
    for (char c : s) {
      if ((up && AsciiLower(c)) || (!up && AsciiUpper(c))) return Value::Bool(false);
      any = any || AsciiLower(c) || AsciiUpper(c);
    }
    return Value::Bool(any);
  }
  Unsupported("str." + name + "()");
}

const std::set<std::string>& PyStrMethods() {
  static const std::set<std::string> m = {
      "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
      "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
      "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
      "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
      "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill"};
  return m;
}

// --- dict and list methods ---

std::vector<Value> DictItems(const Value& d) {
  std::vector<Value> out;
  for (const auto& [k, v] : d.dict->items) out.push_back(Value::List({k, v}, Seq::kTuple));
  return out;
}

Value DictMethod(const Value& self, const std::string& name, Args& a) {
  if (name == "get") {
    Params p("get", a, {"key", "default"});
    if (!p.Get(0)) Fail("get expected at least 1 argument, got 0");
    const Value* v = self.dict->Find(*p.Get(0));
    return v ? *v : p.Or(1, Value::None());
  }
  Params p(name, a, {});
  if (name == "items") return Value::List(DictItems(self), Seq::kDictItems);
  if (name == "keys") return Value::List(Iterate(self), Seq::kDictKeys);
  if (name == "values") {
    std::vector<Value> vals;
    for (const auto& kv : self.dict->items) vals.push_back(kv.second);
    return Value::List(std::move(vals), Seq::kDictValues);
  }
  if (name == "copy") {
    Value d = Value::Dict();
    d.dict->items = self.dict->items;
    return d;
  }
  Unsupported("dict." + name + "()");
}

Value ListMethod(const Value& self, const std::string& name, Args& a) {
  if (name == "count" || name == "index") {
    Params p(name, a, {"value"});
    if (!p.Get(0)) Fail(name + "() takes exactly one argument (0 given)");
    int64_t n = 0;
    const auto& items = self.list->items;
    for (size_t k = 0; k < items.size(); ++k) {
      if (!Equal(items[k], *p.Get(0))) continue;
      if (name == "index") return Value::Int(static_cast<int64_t>(k));
      ++n;
    }
    if (name == "index") Fail(Repr(*p.Get(0)) + " is not in list");
    return Value::Int(n);
  }
  if (name == "copy") return Value::List(self.list->items);
  Unsupported("list." + name + "()");
}

Value Bound(const Value& self, const std::string& name, Value (*method)(const Value&, const std::string&, Args&)) {
  return Value::Func(name, [self, name, method](Interp&, Args& a) { return method(self, name, a); });
}

Value Unsafe(const Value& obj, const std::string& name) {
  return Value::Undefined("access to attribute '" + name + "' of '" + TypeName(obj) + "' object is unsafe.");
}

Value NoAttribute(const Value& obj, const std::string& name) {
  return Value::Undefined("'" + ObjectTypeRepr(obj) + "' has no attribute '" + name + "'");
}

// Python attributes (methods) of a value; nullopt-like Undefined kind when none.
bool PyAttr(const Value& obj, const std::string& name, Value* out) {
  static const std::set<std::string> dict_safe = {"copy", "get", "items", "keys", "values", "fromkeys"};
  static const std::set<std::string> dict_unsafe = {"clear", "pop", "popitem", "setdefault", "update"};
  static const std::set<std::string> list_safe = {"copy", "count", "index"};
  static const std::set<std::string> list_unsafe = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"};
  switch (obj.kind) {
    case Kind::kDict:
      if (dict_safe.count(name)) return *out = Bound(obj, name, DictMethod), true;
      if (dict_unsafe.count(name)) return *out = Unsafe(obj, name), true;
      return false;
    case Kind::kString:
      if (PyStrMethods().count(name)) return *out = Bound(obj, name, StrMethod), true;
      return false;
    case Kind::kList:
      if (obj.list->seq == Seq::kList) {
        if (list_safe.count(name)) return *out = Bound(obj, name, ListMethod), true;
        if (list_unsafe.count(name)) return *out = Unsafe(obj, name), true;
      } else if (obj.list->seq == Seq::kTuple && (name == "count" || name == "index")) {
        return *out = Bound(obj, name, ListMethod), true;
      }
      return false;
    case Kind::kNamespace:
      if (const Value* v = obj.dict->Find(name)) return *out = *v, true;
      return false;
    default: return false;
  }
}

// --- filters ---

std::vector<Value> Items(const Value& v) { return Iterate(v); }

// jinja2's attribute getter for filters: "a.b" and "0" paths through getitem.
Value AttrPath(const Value& item, const std::string& path) {
  Value v = item;
  size_t p = 0;
  while (true) {
    size_t dot = path.find('.', p);
    std::string part = path.substr(p, dot == std::string::npos ? std::string::npos : dot - p);
    bool digits = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (v.is_undefined()) FailUndefined(v);
    v = GetItem(v, digits ? Value::Int(std::stoll(part)) : Value::Str(part));
    if (dot == std::string::npos) return v;
    p = dot + 1;
  }
}

Value SortKey(const Value& v, bool case_sensitive) {
  if (!case_sensitive && v.is_string()) return Value::Str(Lower(v.str()));
  return v;
}

std::vector<Value> Sorted(std::vector<Value> items, bool reverse, bool case_sensitive, const Value& attribute) {
  std::vector<std::pair<Value, Value>> keyed;
  for (Value& v : items) {
    Value k = attribute.is_none() || attribute.is_undefined() ? v : AttrPath(v, ToStr(attribute));
    keyed.emplace_back(SortKey(k, case_sensitive), std::move(v));
  }
  std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& x, const auto& y) {
    return reverse ? Order(y.first, x.first, "<") < 0 : Order(x.first, y.first, "<") < 0;
  });
  std::vector<Value> out;
  for (auto& kv : keyed) out.push_back(std::move(kv.second));
  return out;
}

Value RoundFloat(double x, int64_t precision, const std::string& method) {
  if (precision < 0) Unsupported("round() with a negative precision");
  if (method == "common") {
    if (precision == 0) return Value::Float(std::nearbyint(x));
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::min<int64_t>(precision, 300)), x);
    return Value::Float(std::strtod(buf, nullptr));
  }
  if (method != "ceil" && method != "floor") Fail("method must be 'common', 'ceil' or 'floor'");
  double scale = std::pow(10.0, static_cast<double>(precision));
  double y = method == "ceil" ? std::ceil(x * scale) : std::floor(x * scale);
  return Value::Float(y / scale);
}

std::string Indent(const std::string& s, const Value& width, bool first, bool blank) {
  std::string ind = width.is_string() ? width.str() : std::string(static_cast<size_t>(std::max<int64_t>(0, AsInt(width, "width"))), ' ');
  std::vector<std::string> lines = SplitLines(s + "\n", false);
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? lines[k] : ind + lines[k]);
  }
  return first ? ind + rv : rv;
}

bool ParseInt(std::string s, int base, int64_t* out) {
  s = Strip(s, Value::None(), true, true);
  std::string t;
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] == '_' && k > 0 && k + 1 < s.size() && std::isxdigit(static_cast<unsigned char>(s[k - 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[k + 1])))
      continue;
    t += s[k];
  }
  if (t.empty()) return false;
  size_t b = t[0] == '+' || t[0] == '-' ? 1 : 0;
  if (b == t.size()) return false;
  if (t.size() > b + 2 && t[b] == '0') {  // int('0x1f', 16) and int('0x1f', 0) accept the prefix
    char p = ToLower(t[b + 1]);
    int pb = p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    if (pb && (base == pb || base == 0)) {
      t.erase(b, 2);
      base = pb;
    }
  }
  if (base == 0) base = 10;
  for (size_t k = b; k < t.size(); ++k) {
    int d = std::isdigit(static_cast<unsigned char>(t[k])) ? t[k] - '0'
            : std::isalpha(static_cast<unsigned char>(t[k])) ? ToLower(t[k]) - 'a' + 10 : 99;
    if (d >= base) return false;
  }
  errno = 0;
  long long v = std::strtoll(t.c_str(), nullptr, base);
  if (errno == ERANGE) Unsupported("integers past 64 bits");
  *out = v;
  return true;
}

bool ParseFloat(const std::string& in, double* out) {
  std::string s = Strip(in, Value::None(), true, true);
  std::string t;
  for (char c : s)
    if (c != '_') t += c;
  if (t.empty()) return false;
  std::string low = Lower(t);
  size_t b = low[0] == '+' || low[0] == '-' ? 1 : 0;
  std::string body = low.substr(b);
  if (body == "inf" || body == "infinity" || body == "nan") {
    double v = body == "nan" ? NAN : INFINITY;
    *out = low[0] == '-' ? -v : v;
    return true;
  }
  if (body.find_first_not_of("0123456789.e+-") != std::string::npos) return false;
  char* end = nullptr;
  *out = std::strtod(t.c_str(), &end);
  return end && *end == 0;
}

Value ToInt(const Value& v, const Value& def, int base) {
  switch (v.kind) {
    case Kind::kInt:
    case Kind::kBool: return Value::Int(v.i);
    case Kind::kFloat:
      if (!std::isfinite(v.f)) return def;
      return Value::Int(static_cast<int64_t>(std::trunc(v.f)));
    case Kind::kString: {
      int64_t i;
      if (ParseInt(*v.s, base, &i)) return Value::Int(i);
      double d;
      if (ParseFloat(*v.s, &d) && std::isfinite(d)) return Value::Int(static_cast<int64_t>(std::trunc(d)));
      return def;
    }
    default: return def;
  }
}

Value ToFloat(const Value& v, const Value& def) {
  switch (v.kind) {
    case Kind::kInt:
    case Kind::kBool: return Value::Float(static_cast<double>(v.i));
    case Kind::kFloat: return v;
    case Kind::kString: {
      double d;
      return ParseFloat(*v.s, &d) ? Value::Float(d) : def;
    }
    default: return def;
  }
}

Value TestOrFilterOver(Interp& in, const std::string& fname, const Value& seq, Args& a, bool select, bool attr) {
  std::vector<Value> rest = a.pos;
  std::string attribute;
  if (attr) {
    if (rest.empty()) Fail(fname + "() needs an attribute name");
    attribute = ToStr(rest[0]);
    rest.erase(rest.begin());
  }
  std::string test;
  if (!rest.empty()) {
    test = ToStr(rest[0]);
    rest.erase(rest.begin());
    if (!KnownTest(test)) Fail("No test named '" + test + "'.");
  }
  std::vector<Value> out;
  if (!Truthy(seq)) return Value::List({}, Seq::kIterator);  // jinja2 skips falsy input (None too)
  for (const Value& item : Iterate(seq)) {
    Value subject = attr ? AttrPath(item, attribute) : item;
    bool ok;
    if (test.empty()) {
      ok = Truthy(subject);
    } else {
      Args ta;
      ta.pos = rest;
      ta.kw = a.kw;
      ok = CallTest(in, test, subject, ta);
    }
    if (ok == select) out.push_back(item);
  }
  return Value::List(std::move(out), Seq::kIterator);
}

Value MapFilter(Interp& in, const Value& seq, Args& a) {
  std::vector<Value> out;
  if (!Truthy(seq)) return Value::List({}, Seq::kIterator);  // as jinja2: falsy input maps to nothing
  if (a.pos.empty()) {
    Value attribute, def = Value::Undefined("");
    bool has_default = false;
    for (const auto& [k, v] : a.kw) {
      if (k == "attribute") attribute = v;
      else if (k == "default") def = v, has_default = true;
      else Fail("map() got an unexpected keyword argument '" + k + "'");
    }
    if (attribute.is_undefined()) Fail("map requires a filter argument");
    for (const Value& item : Iterate(seq)) {
      Value v = AttrPath(item, ToStr(attribute));
      out.push_back(v.is_undefined() && has_default ? def : v);
    }
  } else {
    std::string name = ToStr(a.pos[0]);
    if (!KnownFilter(name)) Fail("No filter named '" + name + "'.");
    for (const Value& item : Iterate(seq)) {
      Args fa;
      fa.pos.assign(a.pos.begin() + 1, a.pos.end());
      fa.kw = a.kw;
      out.push_back(CallFilter(in, name, item, fa));
    }
  }
  return Value::List(std::move(out), Seq::kIterator);
}

Value ToJson(const Value& v, Args& a) {
  Params p("tojson", a, {"ensure_ascii", "indent", "separators", "sort_keys"});
  DumpOptions o;
  o.ensure_ascii = p.Flag(0, false);
  Value indent = p.Or(1, Value::None());
  if (indent.is_string()) Unsupported("tojson with a string indent");
  if (!indent.is_none()) {
    o.indent = static_cast<int>(std::max<int64_t>(0, AsInt(indent, "indent")));
    o.item_sep = ",";
  }
  Value seps = p.Or(2, Value::None());
  if (!seps.is_none()) {
    std::vector<Value> s = Iterate(seps);
    if (s.size() != 2) Fail("separators must be a pair of strings");
    o.item_sep = AsStr(s[0], "separator");
    o.key_sep = AsStr(s[1], "separator");
  }
  o.sort_keys = p.Flag(3, false);
  return Value::Str(DumpJson(v, o));
}

Value MinMax(const Value& seq, Args& a, bool max) {
  Params p(max ? "max" : "min", a, {"case_sensitive", "attribute"});
  std::vector<Value> items = Iterate(seq);
  if (items.empty()) return Value::Undefined(std::string("No aggregated item, sequence was empty."));
  std::vector<Value> sorted = Sorted(items, false, p.Flag(0, false), p.Or(1, Value::None()));
  return max ? sorted.back() : sorted.front();
}

const std::set<std::string>& Filters() {
  static const std::set<std::string> f = {
      "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent", "int",
      "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
      "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim",
      "unique", "upper"};
  return f;
}

const std::set<std::string>& Tests() {
  static const std::set<std::string> t = {
      "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter", "float",
      "ge", "gt", "greaterthan", "in", "integer", "iterable", "le", "lower", "lt", "lessthan", "mapping", "ne", "none",
      "number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==", "!=", "<", "<=",
      ">", ">="};
  return t;
}

}  // namespace

bool KnownFilter(const std::string& name) {
  if (Filters().count(name)) return true;
  static const std::set<std::string> jinja_only = {
      "attr", "batch", "center", "filesizeformat", "forceescape", "format", "groupby", "pprint", "random", "slice",
      "striptags", "truncate", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"};
  if (jinja_only.count(name)) Unsupported("the '" + name + "' filter");
  return false;
}

bool KnownTest(const std::string& name) { return Tests().count(name) > 0; }

Value GetAttr(const Value& obj, const std::string& name) {
  Value out;
  if (PyAttr(obj, name, &out)) return out;
  if (obj.kind == Kind::kDict) {
    if (const Value* v = obj.dict->Find(name)) return *v;
  }
  return NoAttribute(obj, name);
}

Value GetItem(const Value& obj, const Value& key) {
  if (key.is_list() && key.list->seq != Seq::kTuple) Fail("unhashable type: '" + TypeName(key) + "'");
  switch (obj.kind) {
    case Kind::kDict:
      if (const Value* v = obj.dict->Find(key)) return *v;
      break;
    case Kind::kList:
      if ((key.kind == Kind::kInt || key.kind == Kind::kBool) && obj.list->seq != Seq::kIterator &&
          obj.list->seq != Seq::kDictItems && obj.list->seq != Seq::kDictKeys && obj.list->seq != Seq::kDictValues) {
        int64_t n = static_cast<int64_t>(obj.list->items.size()), k = key.i < 0 ? key.i + n : key.i;
        if (k >= 0 && k < n) return obj.list->items[static_cast<size_t>(k)];
      }
      break;
    case Kind::kString:
      if (key.kind == Kind::kInt || key.kind == Kind::kBool) {
        std::vector<Value> chars = Iterate(obj);
        int64_t n = static_cast<int64_t>(chars.size()), k = key.i < 0 ? key.i + n : key.i;
        if (k >= 0 && k < n) return chars[static_cast<size_t>(k)];
      }
      break;
    default: break;
  }
  if (key.is_string()) {
    Value out;
    if (PyAttr(obj, key.str(), &out)) return out;
    return NoAttribute(obj, key.str());
  }
  return Value::Undefined(ObjectTypeRepr(obj) + " has no element " + Repr(key));
}

Value Slice(const Value& obj, const Value& start, const Value& stop, const Value& step) {
  auto idx = [](const Value& v, const char* what) -> std::optional<int64_t> {
    if (v.is_none()) return std::nullopt;
    if (v.kind == Kind::kInt || v.kind == Kind::kBool) return v.i;
    Fail("slice indices must be integers or None or have an __index__ method");
  };
  std::optional<int64_t> b = idx(start, "start"), e = idx(stop, "stop"), st = idx(step, "step");
  int64_t s = st.value_or(1);
  if (s == 0) Fail("slice step cannot be zero");
  bool is_str = obj.is_string();
  bool is_seq = obj.is_list() && (obj.list->seq == Seq::kList || obj.list->seq == Seq::kTuple || obj.list->seq == Seq::kRange);
  if (!is_str && !is_seq)
    return Value::Undefined(ObjectTypeRepr(obj) + " has no element slice(" + Repr(start) + ", " + Repr(stop) + ", " +
                            Repr(step) + ")");
  std::u32string u = is_str ? Utf8ToU32(obj.str()) : std::u32string();
  int64_t n = is_str ? static_cast<int64_t>(u.size()) : static_cast<int64_t>(obj.list->items.size());
  auto adjust = [&](std::optional<int64_t> v, int64_t def) {
    if (!v) return def;
    int64_t x = *v;
    if (x < 0) {
      x += n;
      if (x < 0) x = s < 0 ? -1 : 0;
    } else if (x >= n) {
      x = s < 0 ? n - 1 : n;
    }
    return x;
  };
  int64_t lo = adjust(b, s > 0 ? 0 : n - 1), hi = adjust(e, s > 0 ? n : -1);
  std::u32string su;
  std::vector<Value> items;
  for (int64_t k = lo; s > 0 ? k < hi : k > hi; k += s) {
    if (is_str) su += u[static_cast<size_t>(k)];
    else items.push_back(obj.list->items[static_cast<size_t>(k)]);
  }
  if (is_str) return Value::Str(U32ToUtf8(su), obj.markup);
  return Value::List(std::move(items), obj.list->seq == Seq::kTuple ? Seq::kTuple : Seq::kList);
}

Value CallValue(Interp& in, const Value& callee, Args& args) {
  if (callee.kind == Kind::kFunc) return callee.fn->call(in, args);
  if (callee.is_undefined()) FailUndefined(callee);
  Fail("'" + TypeName(callee) + "' object is not callable");
}

Value CallFilter(Interp& in, const std::string& name, const Value& v, Args& a) {
  if (name == "length" || name == "count") return Value::Int(Length(v));
  if (name == "default" || name == "d") {
    Params p(name, a, {"default_value", "boolean"});
    bool use = v.is_undefined() || (p.Flag(1, false) && !Truthy(v));
    return use ? p.Or(0, Value::Str("")) : v;
  }
  if (name == "trim") {
    Params p(name, a, {"chars"});
    return Value::Str(Strip(ToStr(v), p.Or(0, Value::None()), true, true), v.markup);
  }
  if (name == "tojson") return ToJson(v, a);
  if (name == "safe") return Value::Str(ToStr(v), true);
  if (name == "e" || name == "escape") return v.markup ? v : Value::Str(HtmlEscape(ToStr(v)), true);
  if (name == "string") return v.is_string() ? v : Value::Str(ToStr(v));
  if (name == "lower") return Value::Str(Lower(ToStr(v)), v.markup);
  if (name == "upper") return Value::Str(Upper(ToStr(v)), v.markup);
  if (name == "title") return Value::Str(JinjaTitle(ToStr(v)), v.markup);
  if (name == "capitalize") return Value::Str(Capitalize(ToStr(v)), v.markup);
  if (name == "list") return Value::List(Items(v));
  if (name == "items") {
    if (v.is_undefined()) return Value::List({}, Seq::kIterator);
    if (!v.is_dict()) Fail("Can only get item pairs from a mapping.");
    return Value::List(DictItems(v), Seq::kIterator);
  }
  if (name == "join") {
    Params p(name, a, {"d", "attribute"});
    std::string sep = ToStr(p.Or(0, Value::Str(""))), out;
    Value attribute = p.Or(1, Value::None());
    std::vector<Value> items = Items(v);
    for (size_t k = 0; k < items.size(); ++k) {
      if (k) out += sep;
      out += ToStr(attribute.is_none() ? items[k] : AttrPath(items[k], ToStr(attribute)));
    }
    return Value::Str(std::move(out));
  }
  if (name == "first" || name == "last") {
    if (name == "last" && v.is_list() && v.list->seq == Seq::kIterator) Fail("'generator' object is not reversible");
    std::vector<Value> items = Items(v);
    if (items.empty()) return Value::Undefined("No " + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "replace") {
    Params p(name, a, {"old", "new", "count"});
    if (!p.Get(0) || !p.Get(1)) Fail("replace() needs the old and new strings");
    Value count = p.Or(2, Value::None());
    return Value::Str(Replace(ToStr(v), ToStr(*p.Get(0)), ToStr(*p.Get(1)), count.is_none() ? -1 : AsInt(count, "count")));
  }
  if (name == "indent") {
    Params p(name, a, {"width", "first", "blank"});
    if (!v.is_string()) Fail("unsupported operand type(s) for +=: '" + TypeName(v) + "' and 'str'");
    return Value::Str(Indent(v.str(), p.Or(0, Value::Int(4)), p.Flag(1, false), p.Flag(2, false)), v.markup);
  }
  if (name == "int") {
    Params p(name, a, {"default", "base"});
    return ToInt(v, p.Or(0, Value::Int(0)), static_cast<int>(AsInt(p.Or(1, Value::Int(10)), "base")));
  }
  if (name == "float") {
    Params p(name, a, {"default"});
    return ToFloat(v, p.Or(0, Value::Float(0)));
  }
  if (name == "abs") {
    if (v.kind == Kind::kFloat) return Value::Float(std::fabs(v.f));
    if (v.kind == Kind::kInt || v.kind == Kind::kBool) return Value::Int(v.i < 0 ? -v.i : v.i);
    if (v.is_undefined()) FailUndefined(v);
    Fail("bad operand type for abs(): '" + TypeName(v) + "'");
  }
  if (name == "round") {
    Params p(name, a, {"precision", "method"});
    int64_t prec = AsInt(p.Or(0, Value::Int(0)), "precision");
    std::string method = ToStr(p.Or(1, Value::Str("common")));
    if (v.kind == Kind::kInt || v.kind == Kind::kBool) {
      if (method == "common") return Value::Int(v.i);
      return RoundFloat(static_cast<double>(v.i), prec, method);
    }
    if (v.kind != Kind::kFloat) Fail("type " + TypeName(v) + " doesn't define __round__ method");
    return RoundFloat(v.f, prec, method);
  }
  if (name == "select" || name == "reject") return TestOrFilterOver(in, name, v, a, name == "select", false);
  if (name == "selectattr" || name == "rejectattr") return TestOrFilterOver(in, name, v, a, name == "selectattr", true);
  if (name == "map") return MapFilter(in, v, a);
  if (name == "unique") {
    Params p(name, a, {"case_sensitive", "attribute"});
    bool cs = p.Flag(0, false);
    Value attribute = p.Or(1, Value::None());
    std::vector<Value> out, seen;
    for (const Value& item : Items(v)) {
      Value key = SortKey(attribute.is_none() ? item : AttrPath(item, ToStr(attribute)), cs);
      if (std::any_of(seen.begin(), seen.end(), [&](const Value& s) { return Equal(s, key); })) continue;
      seen.push_back(key);
      out.push_back(item);
    }
    return Value::List(std::move(out), Seq::kIterator);
  }
  if (name == "sort") {
    Params p(name, a, {"reverse", "case_sensitive", "attribute"});
    return Value::List(Sorted(Items(v), p.Flag(0, false), p.Flag(1, false), p.Or(2, Value::None())));
  }
  if (name == "dictsort") {
    Params p(name, a, {"case_sensitive", "by", "reverse"});
    if (!v.is_dict()) Fail("You can only sort by either \"key\" or \"value\"");
    std::string by = ToStr(p.Or(1, Value::Str("key")));
    if (by != "key" && by != "value") Fail("You can only sort by either \"key\" or \"value\"");
    std::vector<Value> items = DictItems(v);
    bool cs = p.Flag(0, false), rev = p.Flag(2, false);
    std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
      size_t k = by == "key" ? 0 : 1;
      Value a1 = SortKey(x.list->items[k], cs), b1 = SortKey(y.list->items[k], cs);
      return rev ? Order(b1, a1, "<") < 0 : Order(a1, b1, "<") < 0;
    });
    return Value::List(std::move(items));
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string u = Utf8ToU32(v.str());
      std::reverse(u.begin(), u.end());
      return Value::Str(U32ToUtf8(u), v.markup);
    }
    if (v.is_list() && v.list->seq == Seq::kIterator) {  // reversed() fails; jinja2 falls back to a list
      std::vector<Value> items = Items(v);
      std::reverse(items.begin(), items.end());
      return Value::List(std::move(items));
    }
    std::vector<Value> items = Items(v);
    std::reverse(items.begin(), items.end());
    return Value::List(std::move(items), Seq::kIterator);
  }
  if (name == "sum") {
    Params p(name, a, {"attribute", "start"});
    Value total = p.Or(1, Value::Int(0)), attribute = p.Or(0, Value::None());
    for (const Value& item : Items(v)) total = BinaryOp("+", total, attribute.is_none() ? item : AttrPath(item, ToStr(attribute)));
    return total;
  }
  if (name == "max" || name == "min") return MinMax(v, a, name == "max");
  Unsupported("the '" + name + "' filter");
}

bool CallTest(Interp& in, const std::string& name, const Value& v, Args& a) {
  auto arg = [&](const char* what) -> const Value& {
    if (a.pos.empty()) Fail("test '" + name + "' needs " + what);
    return a.pos[0];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == Kind::kInt;
  if (name == "float") return v.kind == Kind::kFloat;
  if (name == "boolean") return v.kind == Kind::kBool;
  if (name == "true") return v.kind == Kind::kBool && v.b;
  if (name == "false") return v.kind == Kind::kBool && !v.b;
  if (name == "callable") return v.kind == Kind::kFunc;
  if (name == "escaped") return v.markup;
  if (name == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (name == "sequence")
    return v.is_undefined() || v.is_string() || v.is_dict() ||
           (v.is_list() && v.list->seq != Seq::kIterator && v.list->seq != Seq::kDictItems &&
            v.list->seq != Seq::kDictKeys && v.list->seq != Seq::kDictValues);
  if (name == "eq" || name == "equalto" || name == "==") return Equal(v, arg("a value"));
  if (name == "ne" || name == "!=") return !Equal(v, arg("a value"));
  if (name == "lt" || name == "lessthan" || name == "<") return Order(v, arg("a value"), "<") < 0;
  if (name == "le" || name == "<=") return Order(v, arg("a value"), "<=") <= 0;
  if (name == "gt" || name == "greaterthan" || name == ">") return Order(v, arg("a value"), ">") > 0;
  if (name == "ge" || name == ">=") return Order(v, arg("a value"), ">=") >= 0;
  if (name == "in") return Contains(arg("a container"), v);
  if (name == "sameas") {
    const Value& o = arg("a value");
    if (v.kind != o.kind) return false;
    switch (v.kind) {
      case Kind::kNone:
      case Kind::kUndefined: return v.s == o.s || v.is_none();
      case Kind::kBool: return v.b == o.b;
      case Kind::kInt: return v.i == o.i && v.i >= -5 && v.i <= 256;  // CPython's small-int cache
      case Kind::kString: return v.s == o.s;
      case Kind::kList: return v.list == o.list;
      case Kind::kDict:
      case Kind::kNamespace: return v.dict == o.dict;
      case Kind::kFunc: return v.fn == o.fn;
      default: return false;
    }
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    Value m = BinaryOp("%", v, name == "divisibleby" ? arg("a divisor") : Value::Int(2));
    bool zero = !Truthy(m);
    return name == "odd" ? !zero : zero;
  }
  if (name == "lower" || name == "upper") {
    Args none;
    return Truthy(StrMethod(Value::Str(ToStr(v)), name == "lower" ? "islower" : "isupper", none));
  }
  if (name == "filter") return Filters().count(ToStr(arg("a name"))) > 0;
  if (name == "test") return Tests().count(ToStr(arg("a name"))) > 0;
  Fail("No test named '" + name + "'.");
}

namespace {

[[noreturn]] void BadOperands(const std::string& op, const Value& a, const Value& b) {
  Fail("unsupported operand type(s) for " + op + ": '" + TypeName(a) + "' and '" + TypeName(b) + "'");
}

bool IsIntLike(const Value& v) { return v.kind == Kind::kInt || v.kind == Kind::kBool; }

Value Repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t k = 0; k < n; ++k) out += seq.str();
    return Value::Str(std::move(out), seq.markup);
  }
  std::vector<Value> out;
  for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq.list->items.begin(), seq.list->items.end());
  return Value::List(std::move(out), seq.list->seq);
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

}  // namespace

Value BinaryOp(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) FailUndefined(a);
  if (b.is_undefined()) FailUndefined(b);
  bool nums = a.is_number() && b.is_number();
  bool ints = IsIntLike(a) && IsIntLike(b);
  double x = a.kind == Kind::kFloat ? a.f : static_cast<double>(a.i), y = b.kind == Kind::kFloat ? b.f : static_cast<double>(b.i);
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.i, b.i, &r)) Unsupported("integers past 64 bits");
      return Value::Int(r);
    }
    if (nums) return Value::Float(x + y);
    if (a.is_string() && b.is_string()) {
      if (a.markup || b.markup)  // Markup + str escapes the str
        return Value::Str((a.markup ? a.str() : HtmlEscape(a.str())) + (b.markup ? b.str() : HtmlEscape(b.str())), true);
      return Value::Str(a.str() + b.str());
    }
    if (a.is_list() && b.is_list() && a.list->seq == b.list->seq && (a.list->seq == Seq::kList || a.list->seq == Seq::kTuple)) {
      std::vector<Value> out = a.list->items;
      out.insert(out.end(), b.list->items.begin(), b.list->items.end());
      return Value::List(std::move(out), a.list->seq);
    }
    if (a.is_string() && !a.markup) Fail("can only concatenate str (not \"" + TypeName(b) + "\") to str");
    if (a.is_list() && (a.list->seq == Seq::kList || a.list->seq == Seq::kTuple))
      Fail("can only concatenate " + TypeName(a) + " (not \"" + TypeName(b) + "\") to " + TypeName(a));
    BadOperands(op, a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.i, b.i, &r)) Unsupported("integers past 64 bits");
      return Value::Int(r);
    }
    if (nums) return Value::Float(x - y);
    BadOperands(op, a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.i, b.i, &r)) Unsupported("integers past 64 bits");
      return Value::Int(r);
    }
    if (nums) return Value::Float(x * y);
    auto seq = [](const Value& v) {
      return v.is_string() || (v.is_list() && (v.list->seq == Seq::kList || v.list->seq == Seq::kTuple));
    };
    if (seq(a) && IsIntLike(b)) return Repeat(a, b.i);
    if (IsIntLike(a) && seq(b)) return Repeat(b, a.i);
    if (seq(a) || seq(b)) Fail("can't multiply sequence by non-int of type '" + TypeName(seq(a) ? b : a) + "'");
    BadOperands(op, a, b);
  }
  if (op == "/") {
    if (!nums) BadOperands(op, a, b);
    if (y == 0) Fail("division by zero");
    return Value::Float(x / y);
  }
  if (op == "//") {
    if (!nums) BadOperands(op, a, b);
    if (ints) {
      if (b.i == 0) Fail("integer division or modulo by zero");
      return Value::Int(FloorDiv(a.i, b.i));
    }
    if (y == 0) Fail("float floor division by zero");
    return Value::Float(std::floor(x / y));
  }
  if (op == "%") {
    if (a.is_string()) Unsupported("string formatting with %");
    if (!nums) BadOperands(op, a, b);
    if (ints) {
      if (b.i == 0) Fail("integer modulo by zero");
      return Value::Int(a.i - FloorDiv(a.i, b.i) * b.i);
    }
    if (y == 0) Fail("float modulo");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::Float(m);
  }
  if (op == "**") {
    if (!nums) BadOperands("** or pow()", a, b);
    if (ints && b.i >= 0) {
      int64_t r = 1, base = a.i;
      for (int64_t k = 0; k < b.i; ++k)
        if (__builtin_mul_overflow(r, base, &r)) Unsupported("integers past 64 bits");
      return Value::Int(r);
    }
    if (x == 0 && y < 0) Fail("0.0 cannot be raised to a negative power");
    return Value::Float(std::pow(x, y));
  }
  Fail("unknown operator " + op);
}

bool Contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case Kind::kString:
      if (!item.is_string()) Fail("'in <string>' requires string as left operand, not " + TypeName(item));
      return c.str().find(item.str()) != std::string::npos;
    case Kind::kList:
      for (const Value& v : Iterate(c))
        if (Equal(v, item)) return true;
      return false;
    case Kind::kDict: return c.dict->Find(item) != nullptr;
    case Kind::kUndefined: return false;
    default: Fail("argument of type '" + TypeName(c) + "' is not iterable");
  }
}

void AddGlobals(Interp& in, Scope* scope) {
  scope->Set("raise_exception", Value::Func("raise_exception", [](Interp&, Args& a) -> Value {
    throw TemplateError(a.pos.empty() ? std::string() : ToStr(a.pos[0]));
  }));
  scope->Set("strftime_now", Value::Func("strftime_now", [](Interp& in, Args& a) {
    Params p("strftime_now", a, {"format"});
    if (!p.Get(0)) Fail("strftime_now() missing 1 required positional argument: 'format'");
    std::tm tm;
    if (in.options().now) {
      tm = *in.options().now;
    } else {
      std::time_t t = std::time(nullptr);
      localtime_r(&t, &tm);
    }
    const std::string& fmt = AsStr(*p.Get(0), "format");
    std::vector<char> buf(256 + fmt.size() * 16);
    size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
    return Value::Str(std::string(buf.data(), n));
  }));
  scope->Set("namespace", Value::Func("namespace", [](Interp&, Args& a) {
    Value ns = Value::Namespace();
    for (const Value& d : a.pos) {
      if (!d.is_dict()) Fail("namespace() takes mappings as positional arguments");
      for (const auto& kv : d.dict->items) ns.dict->Set(kv.first, kv.second);
    }
    for (const auto& [k, v] : a.kw) ns.dict->Set(Value::Str(k), v);
    return ns;
  }));
  scope->Set("dict", Value::Func("dict", [](Interp&, Args& a) {
    Value d = Value::Dict();
    for (const Value& src : a.pos) {
      if (!src.is_dict()) Unsupported("dict() of something other than a mapping");
      for (const auto& kv : src.dict->items) d.dict->Set(kv.first, kv.second);
    }
    for (const auto& [k, v] : a.kw) d.dict->Set(Value::Str(k), v);
    return d;
  }));
  scope->Set("range", Value::Func("range", [](Interp&, Args& a) {
    if (a.pos.empty() || a.pos.size() > 3 || !a.kw.empty()) Fail("range expected 1 to 3 integer arguments");
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = AsInt(a.pos[0], "range");
    } else {
      start = AsInt(a.pos[0], "range");
      stop = AsInt(a.pos[1], "range");
      if (a.pos.size() == 3) step = AsInt(a.pos[2], "range");
    }
    if (step == 0) Fail("range() arg 3 must not be zero");
    std::vector<Value> items;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      items.push_back(Value::Int(k));
      if (items.size() > 100000) Fail("range too big, more than 100000 items");
    }
    return Value::List(std::move(items), Seq::kRange);
  }));
  for (const char* name : {"lipsum", "cycler", "joiner"})
    scope->Set(name, Value::Func(name, [name](Interp&, Args&) -> Value { Unsupported(std::string(name) + "()"); }));
}

}  // namespace strata::jinja::internal
