// A Llama decoder stack run from C++: every layer's ops, in the order and with the arguments of the
// Python modules (heron_plugins.models.llama), called one after another without returning to Python.
//
// A batch-1 decode step of a small model is a few hundred small calls; in Python each costs tens of
// microseconds of interpreter and dispatch time, a large share of the step. Here the layer's heavy
// ops are the kernels the Python path calls (reached through their addresses: the linear kernel's
// entry, the attention backend's write-and-attend, the fused norm and rotary ops) and the rest are
// the ATen ops the Python path runs (SiLU, the products and the residual add), so a step's outputs
// are the same bits either way.
//
// The stack holds only the layers' shapes and the kernels' addresses; the tensors (weights, norms,
// KV caches) come with each call, so nothing here keeps memory alive or goes stale when the engine
// frees or reloads it (sleep mode).

#include <torch/extension.h>

#include <cstdint>
#include <vector>

namespace {

// a projection: x [T, in] -> [T, out]; has_prompt: whether the step carries prompt tokens (kernels may
// pick their path by it, as their Python modules do)
using LinearFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& weight, int64_t arg, int64_t has_prompt);
using AttendFn = at::Tensor (*)(at::Tensor q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_cache,
                                const at::Tensor& slot_mapping, const at::Tensor& slots, const at::Tensor& seq_lens,
                                const at::Tensor& q_start, double scale, int64_t window);
using NormFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& weight, double eps);
using AddNormFn = std::vector<at::Tensor> (*)(const at::Tensor& x, const at::Tensor& residual,
                                              const at::Tensor& weight, double eps);
using RotateFn = at::Tensor (*)(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// One projection: the kernel's entry and its per-layer argument (e.g. the GGML type of its blocks).
struct Linear {
  LinearFn fn;
  int64_t arg;
};

struct Layer {
  Linear qkv, o, gate_up, down;
  int64_t heads, kv_heads, head_size, intermediate, window;
  double scale, eps_in, eps_post;
};

// The tensors of one layer in a call's flat list, in this order.
enum Slot : int64_t { kInNorm, kQkv, kO, kPostNorm, kGateUp, kDown, kKvCache, kSlots };

class LlamaStack {
 public:
  LlamaStack(std::vector<std::vector<int64_t>> linears, std::vector<std::vector<int64_t>> shapes,
             std::vector<std::vector<double>> floats, int64_t attend, std::vector<int64_t> fused)
      : attend_(reinterpret_cast<AttendFn>(attend)),
        norm_(reinterpret_cast<NormFn>(fused.at(0))),
        add_norm_(reinterpret_cast<AddNormFn>(fused.at(1))),
        rotate_(reinterpret_cast<RotateFn>(fused.at(2))) {
    TORCH_CHECK(linears.size() == shapes.size() && shapes.size() == floats.size(), "llama_stack: one entry per layer");
    for (size_t i = 0; i < linears.size(); ++i) {
      const auto& l = linears[i];
      const auto& s = shapes[i];
      const auto& f = floats[i];
      TORCH_CHECK(l.size() == 8 && s.size() == 5 && f.size() == 3, "llama_stack: malformed layer ", i);
      auto lin = [&](int j) { return Linear{reinterpret_cast<LinearFn>(l[2 * j]), l[2 * j + 1]}; };
      layers_.push_back(Layer{lin(0), lin(1), lin(2), lin(3), s[0], s[1], s[2], s[3], s[4], f[0], f[1], f[2]});
    }
  }

  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }

  // hidden [T, H] -> the last layer's output [T, H]. tensors: kSlots per layer (see Slot); cos, sin:
  // [T, 1, rd] (sin sign-folded, heron.layers.rotary_tables); the attention metadata as the backend built it.
  at::Tensor forward(at::Tensor hidden, const std::vector<at::Tensor>& tensors, const at::Tensor& cos,
                     const at::Tensor& sin, const at::Tensor& slot_mapping, const at::Tensor& slots,
                     const at::Tensor& seq_lens, const at::Tensor& q_start, int64_t has_prompt) const {
    TORCH_CHECK(static_cast<int64_t>(tensors.size()) == kSlots * num_layers(), "llama_stack: expected ",
                kSlots * num_layers(), " tensors, got ", tensors.size());
    TORCH_CHECK(hidden.dim() == 2, "llama_stack: hidden must be [T, H]");
    const int64_t T = hidden.size(0);
    for (size_t i = 0; i < layers_.size(); ++i) {
      const Layer& l = layers_[i];
      const at::Tensor* t = tensors.data() + i * kSlots;
      const int64_t q_size = l.heads * l.head_size, kv_size = l.kv_heads * l.head_size;
      // LlamaAttention: input norm, fused q/k/v projection, q and k rotated in one pass, attention
      const at::Tensor x = norm_(hidden, t[kInNorm], l.eps_in);
      const at::Tensor qkv = l.qkv.fn(x, t[kQkv], l.qkv.arg, has_prompt);  // [T, q + 2 kv]
      const at::Tensor qk = rotate_(qkv.slice(1, 0, q_size + kv_size).view({T, l.heads + l.kv_heads, l.head_size}),
                                    cos, sin);  // [T, H + Hkv, D]
      const at::Tensor q = qk.slice(1, 0, l.heads), k = qk.slice(1, l.heads);
      const at::Tensor v = qkv.slice(1, q_size + kv_size).view({T, l.kv_heads, l.head_size});
      const at::Tensor attn = attend_(q, k, v, t[kKvCache], slot_mapping, slots, seq_lens, q_start, l.scale, l.window)
                                  .reshape({T, q_size});
      const at::Tensor o = l.o.fn(attn, t[kO], l.o.arg, has_prompt);
      // residual add and post-attention norm in one op; GatedMLP with SiLU; the second residual
      const std::vector<at::Tensor> ns = add_norm_(o, hidden, t[kPostNorm], l.eps_post);  // (normed, sum)
      const at::Tensor gu = l.gate_up.fn(ns[0], t[kGateUp], l.gate_up.arg, has_prompt);  // [T, 2 I]
      const at::Tensor act = at::silu(gu.slice(1, 0, l.intermediate)).mul_(gu.slice(1, l.intermediate));
      hidden = ns[1] + l.down.fn(act, t[kDown], l.down.arg, has_prompt);
    }
    return hidden;
  }

 private:
  std::vector<Layer> layers_;
  AttendFn attend_;
  NormFn norm_;
  AddNormFn add_norm_;
  RotateFn rotate_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  py::class_<LlamaStack>(m, "LlamaStack")
      .def(py::init<std::vector<std::vector<int64_t>>, std::vector<std::vector<int64_t>>,
                    std::vector<std::vector<double>>, int64_t, std::vector<int64_t>>(),
           py::arg("linears"), py::arg("shapes"), py::arg("floats"), py::arg("attend"), py::arg("fused"),
           "linears: per layer [fn, arg] x (qkv, o, gate_up, down); shapes: per layer [heads, kv_heads, head_size, "
           "intermediate, window]; floats: per layer [scale, input norm eps, post-attention norm eps]; attend: the "
           "attention entry's address; fused: addresses of rms_norm, add_rms_norm, rotate_heads")
      .def_property_readonly("num_layers", &LlamaStack::num_layers)
      .def("forward", &LlamaStack::forward, py::arg("hidden"), py::arg("tensors"), py::arg("cos"), py::arg("sin"),
           py::arg("slot_mapping"), py::arg("slots"), py::arg("seq_lens"), py::arg("q_start"), py::arg("has_prompt"),
           py::call_guard<py::gil_scoped_release>());
}
