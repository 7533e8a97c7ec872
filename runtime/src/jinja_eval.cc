// The interpreter: statements and expressions evaluated with jinja2's scoping
// (a for loop's body gets a fresh scope each iteration, `if` none, a macro
// call one whose parent is where the macro was defined), and the Template API.
#include <ctime>

#include "jinja_internal.h"

namespace strata::jinja::internal {

Value* Scope::Find(std::string_view name) {
  for (Scope* s = this; s; s = s->parent)
    for (auto& [k, v] : s->vars)
      if (k == name) return &v;
  return nullptr;
}

void Scope::Set(const std::string& name, Value v) {
  for (auto& [k, old] : vars)
    if (k == name) {
      old = std::move(v);
      return;
    }
  vars.emplace_back(name, std::move(v));
}

Scope* Interp::NewScope(Scope* parent) {
  scopes_.emplace_back();
  scopes_.back().parent = parent;
  return &scopes_.back();
}

namespace {

bool Compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return Equal(a, b);
  if (op == "!=") return !Equal(a, b);
  if (op == "in") return Contains(b, a);
  if (op == "notin") return !Contains(b, a);
  int o = Order(a, b, op.c_str());
  if (op == "<") return o < 0;
  if (op == ">") return o > 0;
  if (op == "<=") return o <= 0;
  return o >= 0;
}

// Binds `targets` to `v` (tuple unpacking when there are several).
void Bind(Scope* scope, const std::vector<std::string>& targets, bool tuple, const Value& v) {
  if (!tuple) {
    scope->Set(targets[0], v);
    return;
  }
  std::vector<Value> items = Iterate(v);
  if (items.size() < targets.size())
    Fail("not enough values to unpack (expected " + std::to_string(targets.size()) + ", got " +
         std::to_string(items.size()) + ")");
  if (items.size() > targets.size())
    Fail("too many values to unpack (expected " + std::to_string(targets.size()) + ")");
  for (size_t k = 0; k < targets.size(); ++k) scope->Set(targets[k], items[k]);
}

}  // namespace

Args Interp::EvalArgs(const Expr& e, size_t first, Scope* scope) {
  Args a;
  for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(Eval(*e.args[k], scope));
  for (const auto& [name, x] : e.kwargs) a.kw.emplace_back(name, Eval(*x, scope));
  return a;
}

Value Interp::EvalFilter(const Expr& e, Value subject, Scope* scope) {
  Args a = EvalArgs(e, 1, scope);
  return CallFilter(*this, e.name, subject, a);
}

Value Interp::Eval(const Expr& e, Scope* scope) {
  switch (e.kind) {
    case ExprKind::kLiteral: return e.literal;
    case ExprKind::kName: {
      if (Value* v = scope->Find(e.name)) return *v;
      return Value::Undefined("'" + e.name + "' is undefined");
    }
    case ExprKind::kList:
    case ExprKind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const auto& x : e.args) items.push_back(Eval(*x, scope));
      return Value::List(std::move(items), e.kind == ExprKind::kTuple ? Seq::kTuple : Seq::kList);
    }
    case ExprKind::kDict: {
      Value d = Value::Dict();
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        Value key = Eval(*e.args[k], scope);
        if (key.kind == Kind::kList && key.list->seq != Seq::kTuple) Fail("unhashable type: '" + TypeName(key) + "'");
        if (key.kind == Kind::kDict) Fail("unhashable type: 'dict'");
        d.dict->Set(key, Eval(*e.args[k + 1], scope));
      }
      return d;
    }
    case ExprKind::kGetAttr: {
      Value obj = Eval(*e.args[0], scope);
      if (obj.is_undefined()) FailUndefined(obj);
      return GetAttr(obj, e.name);
    }
    case ExprKind::kGetItem: {
      Value obj = Eval(*e.args[0], scope);
      if (obj.is_undefined()) FailUndefined(obj);
      return GetItem(obj, Eval(*e.args[1], scope));
    }
    case ExprKind::kSlice: {
      Value obj = Eval(*e.args[0], scope);
      if (obj.is_undefined()) FailUndefined(obj);
      Value part[3];
      for (int k = 0; k < 3; ++k) part[k] = e.args[k + 1] ? Eval(*e.args[k + 1], scope) : Value::None();
      return Slice(obj, part[0], part[1], part[2]);
    }
    case ExprKind::kCall: {
      Value callee = Eval(*e.args[0], scope);
      Args a = EvalArgs(e, 1, scope);
      return CallValue(*this, callee, a);
    }
    case ExprKind::kFilter: return EvalFilter(e, Eval(*e.args[0], scope), scope);
    case ExprKind::kTest: {
      Value subject = Eval(*e.args[0], scope);
      Args a = EvalArgs(e, 1, scope);
      return Value::Bool(CallTest(*this, e.name, subject, a) != e.negated);
    }
    case ExprKind::kNeg:
    case ExprKind::kPos: {
      Value v = Eval(*e.args[0], scope);
      if (v.is_undefined()) FailUndefined(v);
      bool neg = e.kind == ExprKind::kNeg;
      if (v.kind == Kind::kFloat) return Value::Float(neg ? -v.f : v.f);
      if (v.kind == Kind::kInt || v.kind == Kind::kBool) return Value::Int(neg ? -v.i : v.i);
      Fail(std::string("bad operand type for unary ") + (neg ? "-" : "+") + ": '" + TypeName(v) + "'");
    }
    case ExprKind::kNot: return Value::Bool(!Truthy(Eval(*e.args[0], scope)));
    case ExprKind::kBinary: {
      Value a = Eval(*e.args[0], scope);
      return BinaryOp(e.name, a, Eval(*e.args[1], scope));
    }
    case ExprKind::kCompare: {
      Value left = Eval(*e.args[0], scope);
      for (size_t k = 0; k < e.ops.size(); ++k) {
        Value right = Eval(*e.args[k + 1], scope);
        if (!Compare(e.ops[k], left, right)) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case ExprKind::kAnd: {
      Value l = Eval(*e.args[0], scope);
      return Truthy(l) ? Eval(*e.args[1], scope) : l;
    }
    case ExprKind::kOr: {
      Value l = Eval(*e.args[0], scope);
      return Truthy(l) ? l : Eval(*e.args[1], scope);
    }
    case ExprKind::kCond: {
      if (Truthy(Eval(*e.args[1], scope))) return Eval(*e.args[0], scope);
      if (e.args[2]) return Eval(*e.args[2], scope);
      return Value::Undefined("the inline if-expression on line " + std::to_string(e.line) +
                              " evaluated to false and no else section was defined.");
    }
    case ExprKind::kConcat: {
      std::string s;
      for (const auto& x : e.args) s += ToStr(Eval(*x, scope));
      return Value::Str(std::move(s));
    }
  }
  Fail("internal error: unknown expression");
}

Flow Interp::Exec(const Body& body, Scope* scope, std::string& out) {
  for (const auto& s : body) {
    Flow f = ExecStmt(*s, scope, out);
    if (f != Flow::kNormal) return f;
  }
  return Flow::kNormal;
}

Flow Interp::ExecStmt(const Stmt& s, Scope* scope, std::string& out) {
  switch (s.kind) {
    case StmtKind::kText: out += s.text; return Flow::kNormal;
    case StmtKind::kOutput: out += ToStr(Eval(*s.expr, scope)); return Flow::kNormal;
    case StmtKind::kIf:
      for (const auto& [cond, body] : s.branches)
        if (!cond || Truthy(Eval(*cond, scope))) return Exec(body, scope, out);
      return Flow::kNormal;
    case StmtKind::kFor: return ExecFor(s, scope, out);
    case StmtKind::kSet: Bind(scope, s.targets, s.tuple_target, Eval(*s.expr, scope)); return Flow::kNormal;
    case StmtKind::kSetAttr: {
      Value ns = Eval(*s.object, scope);
      if (ns.kind != Kind::kNamespace || ns.dict->loop) Fail("cannot assign attribute on non-namespace object");
      ns.dict->Set(Value::Str(s.attr), Eval(*s.expr, scope));
      return Flow::kNormal;
    }
    case StmtKind::kSetBlock:
    case StmtKind::kFilterBlock: {
      std::string body;
      Exec(s.body, NewScope(scope), body);
      Value v = Value::Str(std::move(body));
      for (const auto& f : s.filters) v = EvalFilter(*f, v, scope);
      if (s.kind == StmtKind::kSetBlock) scope->Set(s.targets[0], v);
      else out += ToStr(v);
      return Flow::kNormal;
    }
    case StmtKind::kMacro: scope->Set(s.text, MakeMacro(s, scope)); return Flow::kNormal;
    case StmtKind::kBreak: return Flow::kBreak;
    case StmtKind::kContinue: return Flow::kContinue;
  }
  return Flow::kNormal;
}

Flow Interp::ExecFor(const Stmt& s, Scope* scope, std::string& out) {
  std::vector<Value> items = Iterate(Eval(*s.expr, scope));
  if (s.cond) {
    std::vector<Value> kept;
    for (Value& v : items) {
      Scope* f = NewScope(scope);
      Bind(f, s.targets, s.tuple_target, v);
      if (Truthy(Eval(*s.cond, f))) kept.push_back(std::move(v));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    // A break in the else block belongs to an enclosing loop.
    return s.else_body.empty() ? Flow::kNormal : Exec(s.else_body, NewScope(scope), out);
  }
  int64_t n = static_cast<int64_t>(items.size());
  auto index = std::make_shared<int64_t>(0);
  Value loop = Value::Namespace();
  loop.dict->loop = true;
  const char* keys[] = {"index0", "index", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem",
                        "depth", "depth0", "cycle"};
  for (const char* k : keys) loop.dict->items.emplace_back(Value::Str(k), Value::None());
  auto& f = loop.dict->items;
  f[6].second = Value::Int(n);
  f[9].second = Value::Int(1);
  f[10].second = Value::Int(0);
  f[11].second = Value::Func("cycle", [index](Interp&, Args& a) {
    if (a.pos.empty()) Fail("no items for cycling given");
    return a.pos[static_cast<size_t>(*index % static_cast<int64_t>(a.pos.size()))];
  });
  for (int64_t k = 0; k < n; ++k) {
    *index = k;
    f[0].second = Value::Int(k);
    f[1].second = Value::Int(k + 1);
    f[2].second = Value::Int(n - k);
    f[3].second = Value::Int(n - k - 1);
    f[4].second = Value::Bool(k == 0);
    f[5].second = Value::Bool(k == n - 1);
    f[7].second = k > 0 ? items[k - 1] : Value::Undefined("there is no previous item");
    f[8].second = k + 1 < n ? items[k + 1] : Value::Undefined("there is no next item");
    Scope* it = NewScope(scope);
    Bind(it, s.targets, s.tuple_target, items[k]);
    it->Set("loop", loop);
    if (Exec(s.body, it, out) == Flow::kBreak) break;
  }
  return Flow::kNormal;
}

Value Interp::MakeMacro(const Stmt& s, Scope* defined_in) {
  const Stmt* m = &s;
  return Value::Func("macro", [m, defined_in](Interp& in, Args& a) {
    if (a.pos.size() > m->params.size() && !m->uses_varargs)
      Fail("macro '" + m->text + "' takes not more than " + std::to_string(m->params.size()) + " argument(s)");
    if (++in.depth_ > 200) Fail("maximum recursion depth exceeded while calling macro '" + m->text + "'");
    Scope* scope = in.NewScope(defined_in);
    std::vector<bool> used(a.kw.size());
    for (size_t k = 0; k < m->params.size(); ++k) {
      const auto& [name, def] = m->params[k];
      Value v;
      bool have = k < a.pos.size();
      if (have) v = a.pos[k];
      for (size_t j = 0; j < a.kw.size(); ++j) {
        if (a.kw[j].first != name) continue;
        if (have) Fail("macro '" + m->text + "' got multiple values for argument '" + name + "'");
        v = a.kw[j].second;
        have = true;
        used[j] = true;
      }
      if (!have) v = def ? in.Eval(*def, scope) : Value::Undefined("parameter '" + name + "' was not provided");
      scope->Set(name, v);
    }
    Value kwargs = Value::Dict();
    for (size_t j = 0; j < a.kw.size(); ++j) {
      if (used[j]) continue;
      if (!m->uses_kwargs) Fail("macro '" + m->text + "' takes no keyword argument '" + a.kw[j].first + "'");
      kwargs.dict->Set(Value::Str(a.kw[j].first), a.kw[j].second);
    }
    if (m->uses_kwargs) scope->Set("kwargs", kwargs);
    if (m->uses_varargs) {
      std::vector<Value> rest;
      for (size_t k = m->params.size(); k < a.pos.size(); ++k) rest.push_back(a.pos[k]);
      scope->Set("varargs", Value::List(std::move(rest), Seq::kTuple));
    }
    std::string out;
    in.Exec(m->body, scope, out);
    --in.depth_;
    return Value::Str(std::move(out));
  });
}

}  // namespace strata::jinja::internal

namespace strata::jinja {

using namespace internal;

Template::Template() : program_(std::make_shared<Program>()) {}

Template Template::Parse(std::string_view source) {
  Template t;
  t.program_ = ParseProgram(source);
  return t;
}

namespace {

template <typename J>
std::string RenderJson(const Program& p, const J& context, const RenderOptions& options) {
  if (!context.is_null() && !context.is_object()) Fail("the template context must be a JSON object of variables");
  Interp in(options);
  Scope* globals = in.NewScope(nullptr);
  AddGlobals(in, globals);
  Scope* root = in.NewScope(globals);
  if (context.is_object())
    for (auto it = context.begin(); it != context.end(); ++it) root->Set(it.key(), FromJson(it.value()));
  std::string out;
  in.Exec(p.body, root, out);
  return out;
}

}  // namespace

std::string Template::Render(const Json& context) const { return RenderJson(*program_, context, RenderOptions{}); }
std::string Template::Render(const Json& context, const RenderOptions& o) const { return RenderJson(*program_, context, o); }
std::string Template::Render(const nlohmann::ordered_json& context) const {
  return RenderJson(*program_, context, RenderOptions{});
}
std::string Template::Render(const nlohmann::ordered_json& context, const RenderOptions& o) const {
  return RenderJson(*program_, context, o);
}

}  // namespace strata::jinja
