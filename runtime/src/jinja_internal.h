// The Jinja engine's parts: values with Python semantics, the syntax tree, the
// interpreter, and the builtins (filters, tests, methods, globals).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/runtime/jinja.h"

namespace strata::jinja::internal {

struct ListObj;
struct DictObj;
struct FuncObj;
class Interp;

enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunc, kNamespace };
// What a list-like value is in Python: it decides printing, len() and truth.
enum class Seq : uint8_t { kList, kTuple, kIterator, kDictItems, kDictKeys, kDictValues, kRange };

struct Value {
  Kind kind = Kind::kUndefined;
  bool markup = false;  // a markupsafe.Markup string (from |safe)
  bool b = false;
  int64_t i = 0;
  double f = 0;
  // kString: the text (UTF-8); kUndefined: the message raised when it is used
  // (empty: a plain undefined name whose message the user of it supplies).
  std::shared_ptr<const std::string> s;
  std::shared_ptr<ListObj> list;
  std::shared_ptr<DictObj> dict;  // kDict and kNamespace
  std::shared_ptr<FuncObj> fn;

  static Value Undefined(std::string message);
  static Value None();
  static Value Bool(bool v);
  static Value Int(int64_t v);
  static Value Float(double v);
  static Value Str(std::string v, bool markup = false);
  static Value List(std::vector<Value> items, Seq seq = Seq::kList);
  static Value Dict();
  static Value Namespace();
  static Value Func(std::string name, std::function<Value(Interp&, struct Args&)> call);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_list() const { return kind == Kind::kList; }
  bool is_dict() const { return kind == Kind::kDict; }
  const std::string& str() const { return *s; }
};

struct ListObj {
  std::vector<Value> items;
  Seq seq = Seq::kList;
  bool consumed = false;  // kIterator: iterated once already (Python iterators run out)
};

struct DictObj {
  std::vector<std::pair<Value, Value>> items;  // insertion ordered, like a Python dict
  bool loop = false;                           // kNamespace: the `loop` of a for
  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  void Set(const Value& key, Value v);
};

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

struct FuncObj {
  std::string name;
  std::function<Value(Interp&, Args&)> call;
};

// --- Python semantics of values (jinja_value.cc) ---
[[noreturn]] void Fail(const std::string& message);
[[noreturn]] void Unsupported(const std::string& what);
// Raises the error an undefined value carries, or "'name' is undefined".
[[noreturn]] void FailUndefined(const Value& v);
std::string TypeName(const Value& v);        // Python's type(v).__name__
std::string ObjectTypeRepr(const Value& v);  // jinja2's object_type_repr
bool Truthy(const Value& v);
bool Equal(const Value& a, const Value& b);
// a < b as Python orders them; raises TypeError's message for unordered types.
bool Less(const Value& a, const Value& b);
// -1, 0 or 1 as Python orders a and b; raises "'op' not supported between ..."
// for unordered types.
int Order(const Value& a, const Value& b, const char* op);
std::string ToStr(const Value& v);   // Python str()
std::string Repr(const Value& v);    // Python repr()
std::string FloatRepr(double d);
// Python iter(): the items a for loop sees (dict: keys, str: characters).
std::vector<Value> Iterate(const Value& v);
// len(); raises for values without one.
int64_t Length(const Value& v);
std::u32string Utf8ToU32(std::string_view s);
std::string U32ToUtf8(std::u32string_view s);
size_t CodePoints(std::string_view s);
std::string HtmlEscape(std::string_view s);
struct DumpOptions {
  int indent = -1;  // -1: none
  bool ensure_ascii = false;
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};
std::string DumpJson(const Value& v, const DumpOptions& o);
Value FromJson(const Json& j);
Value FromJson(const nlohmann::ordered_json& j);

// --- Syntax tree (jinja_parser.cc) ---
enum class ExprKind : uint8_t {
  kLiteral, kName, kList, kTuple, kDict, kGetAttr, kGetItem, kSlice, kCall, kFilter, kTest,
  kNeg, kPos, kNot, kBinary, kCompare, kAnd, kOr, kCond, kConcat
};

struct Expr {
  ExprKind kind;
  int line = 0;
  Value literal;
  std::string name;  // name, attribute, filter, test, binary operator
  std::vector<std::unique_ptr<Expr>> args;  // children; may hold nullptr (slice parts, no else)
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  std::vector<std::string> ops;  // kCompare: the operators between args
  bool negated = false;          // kTest: `is not`
};
using ExprP = std::unique_ptr<Expr>;

enum class StmtKind : uint8_t { kText, kOutput, kIf, kFor, kSet, kSetAttr, kSetBlock, kMacro, kFilterBlock, kBreak, kContinue };

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  StmtKind kind;
  int line = 0;
  std::string text;  // kText; kSetAttr/kMacro: the name
  ExprP expr;        // output, set value, for iterable, set-attr object
  std::vector<std::pair<ExprP, Body>> branches;  // kIf: (condition, body); else has a null condition
  std::vector<std::string> targets;              // for / set names (several: tuple unpacking)
  bool tuple_target = false;
  std::string attr;  // kSetAttr
  ExprP object;      // kSetAttr: the namespace
  ExprP cond;        // for ... if cond
  Body body, else_body;
  std::vector<std::pair<std::string, ExprP>> params;  // macro parameters and defaults (null: none)
  bool uses_varargs = false, uses_kwargs = false;
  std::vector<ExprP> filters;  // kSetBlock / kFilterBlock: filter calls with a null subject
};

struct Program {
  Body body;
};

std::unique_ptr<Program> ParseProgram(std::string_view source);
// Whether the builtins know a filter / test; throws for ones jinja2 has that
// strata does not.
bool KnownFilter(const std::string& name);
bool KnownTest(const std::string& name);

// --- Interpreter (jinja_eval.cc) ---
struct Scope {
  Scope* parent = nullptr;
  std::vector<std::pair<std::string, Value>> vars;
  Value* Find(std::string_view name);
  void Set(const std::string& name, Value v);
};

enum class Flow { kNormal, kBreak, kContinue };

class Interp {
 public:
  explicit Interp(const RenderOptions& options) : options_(options) {}
  Scope* NewScope(Scope* parent);
  Value Eval(const Expr& e, Scope* scope);
  Flow Exec(const Body& body, Scope* scope, std::string& out);
  const RenderOptions& options() const { return options_; }

 private:
  Flow ExecStmt(const Stmt& s, Scope* scope, std::string& out);
  Flow ExecFor(const Stmt& s, Scope* scope, std::string& out);
  Value MakeMacro(const Stmt& s, Scope* scope);
  Value EvalFilter(const Expr& e, Value subject, Scope* scope);
  Args EvalArgs(const Expr& e, size_t first, Scope* scope);

  const RenderOptions& options_;
  std::deque<Scope> scopes_;  // every scope of this render: macros keep pointers to theirs
  int depth_ = 0;
};

// --- Builtins (jinja_builtins.cc) ---
Value GetAttr(const Value& obj, const std::string& name);  // jinja2 sandbox getattr
Value GetItem(const Value& obj, const Value& key);         // jinja2 sandbox getitem
Value Slice(const Value& obj, const Value& start, const Value& stop, const Value& step);
Value CallFilter(Interp& in, const std::string& name, const Value& subject, Args& args);
bool CallTest(Interp& in, const std::string& name, const Value& subject, Args& args);
Value BinaryOp(const std::string& op, const Value& a, const Value& b);
bool Contains(const Value& container, const Value& item);  // `item in container`
void AddGlobals(Interp& in, Scope* scope);
Value CallValue(Interp& in, const Value& callee, Args& args);

}  // namespace strata::jinja::internal
