#include "upscaler/pth_reader.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <memory>
#include <variant>

#include "upscaler/upscaler.h"

namespace petcam::upscaler {

namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;
struct Mark {};
struct Global {
  std::string name;  // "module.qualname"
};
struct Storage {
  torch::Tensor data;  // 1-D, its dtype
};
using Items = std::vector<ValuePtr>;
using Pairs = std::vector<std::pair<ValuePtr, ValuePtr>>;
struct List {
  Items items;
};
struct Tuple {
  Items items;
};
struct Dict {
  Pairs items;
};

struct Value {
  std::variant<std::monostate, Mark, bool, std::int64_t, double, std::string, Global, Storage, torch::Tensor, List,
               Tuple, Dict>
      v;
};

template <class T>
ValuePtr make(T x) {
  auto p = std::make_shared<Value>();
  p->v = std::move(x);
  return p;
}

class Unpickler {
 public:
  Unpickler(caffe2::serialize::PyTorchStreamReader& zip, const char* data, std::size_t size, std::string path)
      : zip_(zip), p_(data), end_(data + size), path_(std::move(path)) {}

  ValuePtr run() {
    while (true) {
      const std::uint8_t op = u8();
      switch (op) {
        case 0x80:
          u8();
          break;  // PROTO
        case 0x95:
          bytes(8);
          break;  // FRAME
        case '.':
          return pop();  // STOP
        case '(':
          push(make(Mark{}));
          break;  // MARK
        case 'N':
          push(make(std::monostate{}));
          break;
        case 0x88:
          push(make(true));
          break;
        case 0x89:
          push(make(false));
          break;
        case 'J':
          push(make(static_cast<std::int64_t>(static_cast<std::int32_t>(le(4)))));
          break;
        case 'K':
          push(make(static_cast<std::int64_t>(le(1))));
          break;
        case 'M':
          push(make(static_cast<std::int64_t>(le(2))));
          break;
        case 0x8a:
          push(make(long1()));
          break;  // LONG1
        case 'G':
          push(make(binfloat()));
          break;
        case 'X':
          push(make(std::string(bytes(le(4)))));
          break;  // BINUNICODE
        case 0x8c:
          push(make(std::string(bytes(le(1)))));
          break;     // SHORT_BINUNICODE
        case 'c': {  // GLOBAL
          std::string module = line(), name = line();
          push(make(Global{module + "." + name}));
          break;
        }
        case ')':
          push(make(Tuple{}));
          break;
        case ']':
          push(make(List{}));
          break;
        case '}':
          push(make(Dict{}));
          break;
        case 't':
          push(make(Tuple{pop_to_mark()}));
          break;
        case 0x85:
        case 0x86:
        case 0x87: {  // TUPLE1..3
          Items items(op - 0x84);
          for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
          push(make(Tuple{std::move(items)}));
          break;
        }
        case 'q':
          memo(le(1));
          break;  // BINPUT
        case 'r':
          memo(le(4));
          break;  // LONG_BINPUT
        case 0x94:
          memo(memo_.size());
          break;  // MEMOIZE
        case 'h':
          push(recall(le(1)));
          break;  // BINGET
        case 'j':
          push(recall(le(4)));
          break;     // LONG_BINGET
        case 'a': {  // APPEND
          auto v = pop();
          as<List>(top(), "APPEND").items.push_back(v);
          break;
        }
        case 'e': {  // APPENDS
          auto items = pop_to_mark();
          auto& l = as<List>(top(), "APPENDS").items;
          l.insert(l.end(), items.begin(), items.end());
          break;
        }
        case 's': {  // SETITEM
          auto v = pop(), k = pop();
          as<Dict>(top(), "SETITEM").items.emplace_back(k, v);
          break;
        }
        case 'u': {  // SETITEMS
          auto items = pop_to_mark();
          if (items.size() % 2) fail("SETITEMS with an odd number of items");
          auto& d = as<Dict>(top(), "SETITEMS").items;
          for (std::size_t i = 0; i < items.size(); i += 2) d.emplace_back(items[i], items[i + 1]);
          break;
        }
        case 'b':
          pop();
          break;  // BUILD: the state of an OrderedDict (its _metadata), not needed
        case 'Q':
          push(persistent_load(pop()));
          break;     // BINPERSID
        case 'R': {  // REDUCE
          auto args = pop();
          auto fn = pop();
          push(reduce(fn, args));
          break;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02X", op);
          fail(std::string("unsupported pickle opcode ") + hex);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw ModelError(path_ + ": not a state dict this reader understands: " + why);
  }

  std::uint8_t u8() {
    if (p_ >= end_) fail("data.pkl ends early");
    return static_cast<std::uint8_t>(*p_++);
  }
  std::string_view bytes(std::uint64_t n) {
    if (n > static_cast<std::uint64_t>(end_ - p_)) fail("data.pkl ends early");
    std::string_view s(p_, n);
    p_ += n;
    return s;
  }
  std::uint64_t le(int n) {
    auto b = bytes(n);
    std::uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(b[i]);
    return v;
  }
  std::int64_t long1() {
    const int n = u8();
    if (n > 8) fail("integer too large");
    if (n == 0) return 0;
    std::uint64_t v = le(n);
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~0ull << (8 * n);  // sign-extend
    return static_cast<std::int64_t>(v);
  }
  double binfloat() {
    std::uint64_t bits = 0;
    for (char c : bytes(8)) bits = bits << 8 | static_cast<std::uint8_t>(c);  // big-endian
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }
  std::string line() {
    const char* nl = static_cast<const char*>(std::memchr(p_, '\n', end_ - p_));
    if (!nl) fail("data.pkl ends early");
    std::string s(p_, nl);
    p_ = nl + 1;
    return s;
  }

  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  ValuePtr pop() {
    if (stack_.empty()) fail("stack underflow");
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  ValuePtr& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  Items pop_to_mark() {
    Items items;
    while (true) {
      auto v = pop();
      if (std::holds_alternative<Mark>(v->v)) break;
      items.push_back(std::move(v));
    }
    return {items.rbegin(), items.rend()};
  }
  void memo(std::uint64_t i) {
    if (i > (1u << 24)) fail("memo index out of range");
    if (memo_.size() <= i) memo_.resize(i + 1);
    memo_[i] = top();
  }
  ValuePtr recall(std::uint64_t i) {
    if (i >= memo_.size() || !memo_[i]) fail("memo index out of range");
    return memo_[i];
  }

  template <class T>
  T& as(const ValuePtr& v, const char* what) {
    if (auto* x = std::get_if<T>(&v->v)) return *x;
    fail(std::string(what) + " on a value of the wrong type");
  }

  static torch::Dtype storage_dtype(const std::string& name, bool& ok) {
    ok = true;
    if (name == "torch.FloatStorage") return torch::kFloat;
    if (name == "torch.HalfStorage") return torch::kHalf;
    if (name == "torch.BFloat16Storage") return torch::kBFloat16;
    if (name == "torch.DoubleStorage") return torch::kDouble;
    if (name == "torch.LongStorage") return torch::kLong;
    if (name == "torch.IntStorage") return torch::kInt;
    ok = false;
    return torch::kFloat;
  }

  // ('storage', torch.XStorage, key, location, numel) -> the bytes of data/<key>.
  ValuePtr persistent_load(const ValuePtr& pid) {
    auto& t = as<Tuple>(pid, "persistent id").items;
    if (t.size() < 5) fail("persistent id is not a storage");
    auto* kind = std::get_if<std::string>(&t[0]->v);
    auto* type = std::get_if<Global>(&t[1]->v);
    auto* key = std::get_if<std::string>(&t[2]->v);
    auto* numel = std::get_if<std::int64_t>(&t[4]->v);
    if (!kind || *kind != "storage" || !type || !key || !numel || *numel < 0) fail("persistent id is not a storage");
    bool ok = false;
    const auto dtype = storage_dtype(type->name, ok);
    if (!ok) fail("unsupported storage type " + type->name);
    const std::string record = "data/" + *key;
    if (!zip_.hasRecord(record)) fail("missing " + record);
    auto [ptr, size] = zip_.getRecord(record);
    const auto elem = static_cast<std::size_t>(torch::elementSize(dtype));
    if (size != static_cast<std::size_t>(*numel) * elem) fail(record + " has the wrong size");
    auto tensor = torch::empty({*numel}, dtype);
    std::memcpy(tensor.data_ptr(), ptr.get(), size);
    return make(Storage{tensor});
  }

  ValuePtr reduce(const ValuePtr& fn, const ValuePtr& args_v) {
    auto* g = std::get_if<Global>(&fn->v);
    if (!g) fail("REDUCE of something that is not a global");
    auto& args = as<Tuple>(args_v, "REDUCE").items;
    if (g->name == "collections.OrderedDict") return make(Dict{});
    if (g->name == "torch._utils._rebuild_tensor_v2") return rebuild_tensor(args);
    // (value, ...): a parameter's data, or a dict tagged with its type by libtorch's pickler.
    if ((g->name == "torch._utils._rebuild_parameter" || g->name == "torch.jit._pickle.restore_type_tag") &&
        !args.empty())
      return args[0];
    fail("refusing to call " + g->name);
  }

  static std::vector<std::int64_t> ints(const ValuePtr& v, Unpickler& self) {
    std::vector<std::int64_t> out;
    for (auto& x : self.as<Tuple>(v, "tensor shape").items) {
      auto* i = std::get_if<std::int64_t>(&x->v);
      if (!i || *i < 0) self.fail("bad tensor shape");
      out.push_back(*i);
    }
    return out;
  }

  // (storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
  ValuePtr rebuild_tensor(const Items& a) {
    if (a.size() < 4) fail("bad tensor arguments");
    auto& storage = as<Storage>(a[0], "tensor storage").data;
    auto* offset = std::get_if<std::int64_t>(&a[1]->v);
    const auto size = ints(a[2], *this), stride = ints(a[3], *this);
    if (!offset || *offset < 0 || size.size() != stride.size()) fail("bad tensor arguments");
    // The furthest element the view reaches must lie inside the storage.
    std::int64_t last = *offset;
    bool empty = false;
    for (std::size_t i = 0; i < size.size(); ++i) {
      if (size[i] == 0)
        empty = true;
      else
        last += (size[i] - 1) * stride[i];
    }
    if (!empty && last >= storage.numel()) fail("tensor reaches past its storage");
    return make(storage.as_strided(size, stride, *offset).clone());
  }

  caffe2::serialize::PyTorchStreamReader& zip_;
  const char* p_;
  const char* end_;
  std::string path_;
  std::vector<ValuePtr> stack_;
  std::vector<ValuePtr> memo_;
};

void flatten(const Dict& d, const std::string& prefix, std::map<std::string, torch::Tensor>& out,
             const std::string& path) {
  for (const auto& [k, v] : d.items) {
    auto* key = std::get_if<std::string>(&k->v);
    if (!key) throw ModelError(path + ": state dict keys must be strings");
    if (auto* t = std::get_if<torch::Tensor>(&v->v))
      out[prefix + *key] = *t;
    else if (auto* sub = std::get_if<Dict>(&v->v))
      flatten(*sub, prefix + *key + "/", out, path);
    // other entries (an epoch number, a config string) carry no weights
  }
}

}  // namespace

std::map<std::string, torch::Tensor> read_pth(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error&) {
    throw ModelError(path + ": not a PyTorch .pth file (expected the zip format of torch.save since 1.6)");
  }
  if (!zip->hasRecord("data.pkl")) throw ModelError(path + ": not a torch.save archive (no data.pkl)");
  auto [data, size] = zip->getRecord("data.pkl");
  Unpickler u(*zip, static_cast<const char*>(data.get()), size, path);
  auto root = u.run();
  auto* dict = std::get_if<Dict>(&root->v);
  if (!dict) throw ModelError(path + ": not a PyTorch state dict (top level is not a dict)");
  std::map<std::string, torch::Tensor> out;
  flatten(*dict, "", out, path);
  return out;
}

}  // namespace petcam::upscaler
