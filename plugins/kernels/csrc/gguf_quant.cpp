// GGUF quantized matmul for CPU: the torch front end of the gguf_ops kernels.
//
// y[T, N] = x[T, K] W^T with W as the file's packed blocks (uint8 [N, row_bytes]), multiplied as a
// dense model of x's dtype holds it: dequantized exactly (float32), or rounded to bfloat16 for bfloat16
// x. The row path (T <= small_t; the Python side passes "every T"): each 32-weight sub-block of a few
// weight rows is dequantized in registers (for larger T once into a per-thread buffer) and dotted with
// every row of x in float32 sums whose order
// depends on neither T nor the split of rows over at::parallel_for, so an output row is the same bits
// however the tokens are batched. The tile path (above small_t): tiles of weight rows are dequantized
// into a small buffer and multiplied with at::mm (oneDNN's summation order). No whole dequantized
// matrix is ever held.
// The block kernels live in gguf_quant_kernels.cpp, built three times (scalar, AVX2, AVX512) and
// chosen at run time by what this CPU supports, or by the `isa` argument ("avx512bf16": the AVX512
// build whose bfloat16 row dots use vdpbf16ps).
// The AMX path ("amx": avx512bf16, plus the tile unit for bfloat16 x with T >= kAmxMinT, or any T for
// a weight of kAmxAllTBytes or more): rows dequantized to bfloat16 as the row path has them, multiplied
// by the tile unit (tdpbf16ps) in its own summation order, so its outputs may differ from the row
// path's in the last bits; each output element is still the same bits whatever T, the batch or the
// thread split. T <= kAmxFewT runs the few-token kernel (gguf_quant_simd.cpp: each sub-block built in
// registers just ahead of its tiles), more the many-token one (gguf_quant_amx.cpp: 32 rows dequantized
// per pass); the two give the same bits. Below kAmxMinT (decode, speculative verify steps) on smaller
// weights, and for float32 x, it is the avx512bf16 path, bit for bit.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <string>
#include <vector>

namespace heron_gguf {

#define HERON_GGUF_DECLARE(ns)                                                                               \
  namespace ns {                                                                                             \
  void dequant_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, float* out);    \
  void dequant_rows_bf16(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,            \
                         uint16_t* out);                                                                     \
  void dot_rows_f32(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,       \
                    const float* x, int64_t T, float* y, int64_t ldy, float* buf);                           \
  void dot_rows_bf16(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,      \
                     const uint16_t* xb, const float* x, int64_t T, float* y, int64_t ldy, uint16_t* buf);   \
  }

HERON_GGUF_DECLARE(scalar)
#if defined(__x86_64__) && defined(__GNUC__)
HERON_GGUF_DECLARE(avx2)
HERON_GGUF_DECLARE(avx512)
namespace avx512 {
void dot_rows_bf16_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                      const uint16_t* xb, const float* x, int64_t T, float* y, int64_t ldy, uint16_t* buf);
void amx_few_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                  const uint16_t* xv, int64_t T, const uint16_t* bias, uint16_t* y, int64_t ldy);
}
namespace amx {
bool available();
void pack_x(const uint16_t* x, int64_t T, int64_t k, bool pair_perm, uint16_t* xv);
void linear_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                 const uint16_t* xv, int64_t T, const uint16_t* bias, uint16_t* y, int64_t ldy, uint16_t* wbuf,
                 float* c);
}  // namespace amx
#define HERON_GGUF_X86 1
#endif

namespace {

using DequantFn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, float*);
using DequantBf16Fn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, uint16_t*);
using DotF32Fn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, int64_t, const float*, int64_t, float*,
                          int64_t, float*);
using DotBf16Fn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, int64_t, const uint16_t*, const float*,
                           int64_t, float*, int64_t, uint16_t*);

struct Kernels {
  DequantFn dequant;
  DequantBf16Fn dequant_bf16;
  DotF32Fn dot_f32;
  DotBf16Fn dot_bf16;
  bool amx = false;  // bfloat16 x with T >= kAmxMinT goes to the AMX path
};

// The ISA paths this CPU can run, best last: "scalar", "avx2", "avx512", "avx512bf16", "amx".
std::vector<std::string> cpu_isas() {
  std::vector<std::string> out{"scalar"};
#ifdef HERON_GGUF_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx2) out.emplace_back("avx2");
  if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni"))
    out.emplace_back("avx512");
  if (out.back() == "avx512" && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi"))
    out.emplace_back("avx512bf16");
  if (out.back() == "avx512bf16" && amx::available()) out.emplace_back("amx");
#endif
  return out;
}

// The kernels of `isa` ("" = $HERON_GGUF_ISA if set, else the best this CPU runs); refuses a path this CPU lacks.
Kernels kernels(const std::string& isa) {
  static const std::vector<std::string> have = cpu_isas();
  const char* env = isa.empty() ? std::getenv("HERON_GGUF_ISA") : nullptr;  // getenv: ~50 ns, os.environ: ~1 us
  const std::string want = !isa.empty() ? isa : (env != nullptr && *env != '\0') ? std::string(env) : have.back();
  TORCH_CHECK(std::find(have.begin(), have.end(), want) != have.end(), "gguf_ops: ISA path '", want,
              "' is not available on this CPU (have: ", c10::Join(", ", have), ")");
#ifdef HERON_GGUF_X86
  if (want == "avx512bf16" || want == "amx") {
    return {avx512::dequant_rows, avx512::dequant_rows_bf16, avx512::dot_rows_f32, avx512::dot_rows_bf16_dp,
            want == "amx"};
  }
  if (want == "avx512") {
    return {avx512::dequant_rows, avx512::dequant_rows_bf16, avx512::dot_rows_f32, avx512::dot_rows_bf16};
  }
  if (want == "avx2") return {avx2::dequant_rows, avx2::dequant_rows_bf16, avx2::dot_rows_f32, avx2::dot_rows_bf16};
#endif
  return {scalar::dequant_rows, scalar::dequant_rows_bf16, scalar::dot_rows_f32, scalar::dot_rows_bf16};
}

int64_t block_size(int64_t qtype) { return qtype >= 12 ? 256 : 32; }

int64_t type_size(int64_t qtype) {
  switch (qtype) {
    case 2: return 18;
    case 3: return 20;
    case 6: return 22;
    case 7: return 24;
    case 8: return 34;
    case 12: return 144;
    case 13: return 176;
    case 14: return 210;
    default: TORCH_CHECK(false, "gguf_ops: unsupported GGML type ", qtype);
  }
}

void check_weight(const at::Tensor& qweight, int64_t qtype, int64_t k) {
  TORCH_CHECK(qweight.scalar_type() == at::kByte && qweight.dim() == 2 && qweight.is_contiguous(),
              "gguf_ops: qweight must be a contiguous uint8 [N, row_bytes] tensor");
  TORCH_CHECK(k % block_size(qtype) == 0, "gguf_ops: K=", k, " is not a multiple of the block size ",
              block_size(qtype));
  TORCH_CHECK(qweight.size(1) == k / block_size(qtype) * type_size(qtype), "gguf_ops: row_bytes ",
              qweight.size(1), " does not hold K=", k, " weights of type ", qtype);
}

// Weight rows the kernels' dot_rows_* dequantize per pass, at most (their scratch is kMaxRows x K).
constexpr int64_t kMaxRows = 4;

// Weight rows worth one parallel task: at least ~32k multiply-adds (each row is dequantized once as well).
int64_t grain(int64_t k, int64_t t) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, k * t)); }

// Rows [0, n) cut into several tasks per thread, handed out dynamically: when another process or
// thread (the HTTP server's event loop, a client on the same cores) holds a core for a moment, the
// other threads take its remaining tasks instead of waiting for it at the end of the call. A row's
// result depends on neither the cut nor the thread (see the kernels), so the output is the same bits.
// `align`: tasks hold whole multiples of it (the kernels' passes).
template <class F>
void parallel_rows(int64_t n, int64_t grain, const F& f, int64_t align = kMaxRows) {
  const int64_t threads = at::get_num_threads();
  if (threads <= 1 || n <= grain || at::in_parallel_region()) {
    f(0, n);
    return;
  }
  constexpr int64_t kTasksPerThread = 8;
  int64_t chunk = std::max(grain, (n + threads * kTasksPerThread - 1) / (threads * kTasksPerThread));
  chunk = (chunk + align - 1) / align * align;  // whole passes of the kernels' rows
  const int64_t tasks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(std::min(threads, tasks)))
  for (int64_t t = 0; t < tasks; ++t) f(t * chunk, std::min(n, (t + 1) * chunk));
}

// The row path: per weight row, the dequantized values linear_large would multiply (float32, or
// bfloat16 for bfloat16 x), in registers or a per-thread buffer, dotted with every row of x in float32 sums; then
// the bias, added as linear_large adds it. Scratch lives in thread-local vectors, not tensors: at
// T = 1 a matmul takes ~10-50 us, and each tensor allocation through the dispatcher costs ~1-2 us.
at::Tensor linear_rows(const Kernels& kern, const at::Tensor& x, const at::Tensor& w, int64_t qtype,
                       const c10::optional<at::Tensor>& bias) {
  const int64_t T = x.size(0), k = x.size(1), n = w.size(0), row_bytes = w.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  thread_local std::vector<float> xf, yf;  // the calling thread's: x as float32 (bf16 x), float32 sums (bf16 y)
  const uint16_t* xb = nullptr;
  const float* xp = nullptr;
  if (bf16) {
    xb = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
    xf.resize(T * k);
    for (int64_t i = 0; i < T * k; ++i) xf[i] = c10::detail::f32_from_bits(xb[i]);
    xp = xf.data();
    yf.resize(T * n);
  } else {
    xp = x.data_ptr<float>();
  }
  auto y = at::empty({T, n}, x.options());
  float* yp = bf16 ? yf.data() : y.data_ptr<float>();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int q = static_cast<int>(qtype);
  at::Tensor b;  // the bias in y's dtype, as linear_large adds it: y (rounded to y's dtype) + b, rounded
  if (bias.has_value() && bias->defined()) b = bias->to(y.scalar_type()).contiguous();
  at::BFloat16* out = bf16 ? y.data_ptr<at::BFloat16>() : nullptr;
  const at::BFloat16* bpb = bf16 && b.defined() ? b.data_ptr<at::BFloat16>() : nullptr;
  const float* bpf = !bf16 && b.defined() ? b.data_ptr<float>() : nullptr;
  parallel_rows(n, grain(k, T), [&](int64_t n0, int64_t n1) {
    if (bf16) {
      thread_local std::vector<uint16_t> buf;
      buf.resize(kMaxRows * k);
      kern.dot_bf16(q, wp, row_bytes, n0, n1, k, xb, xp, T, yp, n, buf.data());
      // this task's columns rounded (and the bias added) here, on its own thread, while they are in cache
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t i = t * n + n0; i < t * n + n1; ++i) {
          out[i] = at::BFloat16(yp[i]);
          if (bpb != nullptr) out[i] = at::BFloat16(static_cast<float>(out[i]) + static_cast<float>(bpb[i - t * n]));
        }
      }
    } else {
      thread_local std::vector<float> buf;
      buf.resize(kMaxRows * k);
      kern.dot_f32(q, wp, row_bytes, n0, n1, k, xp, T, yp, n, buf.data());
      if (bpf != nullptr) {
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t i = t * n + n0; i < t * n + n1; ++i) yp[i] += bpf[i - t * n];
        }
      }
    }
  });
  return y;
}

// Rows of x from which bfloat16 x goes to the AMX path (isa "amx"): its first T that may (the row
// path's T <= 8 is kept for decode and speculative verify steps), and already a win there. Measured
// (2 threads, us, row path / AMX) at T = 9: Q4_1 1536x576 225 / 126, 576x1536 186 / 119, 576x576
// 92 / 47, Q8_0 49152x576 8395 / 4229; at T = 16: 273 / 112, 296 / 119, 131 / 50, 11275 / 3805.
constexpr int64_t kAmxMinT = 9;

// Weights of at least this many bytes run on the tile unit at every T (bfloat16 x, isa "amx"), so
// decode and speculative verify steps share its bits: an LM head (SmolLM2-135M's Q8_0 one is 29 MiB)
// streams from memory, where the few-token kernel's prefetched 32-row passes keep up with the row path
// at T = 1 and stay flat with T. Measured in the engine, steps alternating (2 threads, ms per LM head):
// row path / tile unit T = 1 2.33 / 2.14, T = 3 3.27 / 2.14, T = 5 3.75 / 2.36. The layers' smaller
// weights stay on the row path below kAmxMinT: there the tile unit costs ~15% more at T = 1.
constexpr int64_t kAmxAllTBytes = int64_t{8} << 20;

// Rows of x up to which the AMX path runs the few-token kernel (gguf_quant_simd.cpp), and the row
// multiple its parallel tasks hold (one 16-row tile).
constexpr int64_t kAmxFewT = 16, kAmxFewAlign = 16;

#ifdef HERON_GGUF_X86
// Weight rows amx::linear_rows dequantizes per pass: a parallel task holds whole passes.
constexpr int64_t kAmxRows = 32;

// The AMX path for bfloat16 x: x packed into the B tiles' layout once, then tasks of whole passes of
// weight rows, each writing its columns of y (rounded, bias added) itself.
at::Tensor linear_amx(const at::Tensor& x, const at::Tensor& w, int64_t qtype, const c10::optional<at::Tensor>& bias) {
  const int64_t T = x.size(0), k = x.size(1), n = w.size(0), row_bytes = w.size(1);
  const int q = static_cast<int>(qtype);
  const uint8_t* wp = w.data_ptr<uint8_t>();
  auto y = at::empty({T, n}, x.options());
  at::Tensor b;
  if (bias.has_value() && bias->defined()) b = bias->to(at::kBFloat16).contiguous();
  const auto* bp = b.defined() ? reinterpret_cast<const uint16_t*>(b.data_ptr<at::BFloat16>()) : nullptr;
  auto* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  thread_local std::vector<uint16_t> xv;  // the calling thread's: x in the VNNI layout, tokens padded to 16
  xv.resize((T + 15) / 16 * 16 * k);
  amx::pack_x(xp, T, k, q == 2 || q == 3, xv.data());  // Q4_0, Q4_1: see pack_x
  const uint16_t* xvp = xv.data();  // the tasks run on other threads: not their own thread_local xv
  if (T <= kAmxFewT) {  // each sub-block built in registers just ahead of its tiles
    parallel_rows(n, grain(k, T), [&](int64_t n0, int64_t n1) {
      avx512::amx_few_rows(q, wp, row_bytes, n0, n1, k, xvp, T, bp, yp, n);
    }, kAmxFewAlign);
    return y;
  }
  parallel_rows(n, grain(k, T), [&](int64_t n0, int64_t n1) {
    thread_local std::vector<uint16_t> wbuf;
    thread_local std::vector<float> c;
    wbuf.resize(kAmxRows * k);
    c.resize(4 * 16 * 16);
    amx::linear_rows(q, wp, row_bytes, n0, n1, k, xvp, T, bp, yp, n, wbuf.data(), c.data());
  }, kAmxRows);
  return y;
}
#endif

// Rows of W dequantized per tile: enough for a GEMM that keeps the cores busy, small enough to stay in cache.
constexpr int64_t kTileElems = 1 << 18;

// The GEMM path, in x's dtype: bfloat16 tiles (rounded from the exact float weights) for bfloat16 x,
// which oneDNN multiplies several times faster than float32 here; float32 tiles for float32 x.
at::Tensor linear_large(const Kernels& kern, const at::Tensor& x, const at::Tensor& w, int64_t qtype) {
  const int64_t T = x.size(0), k = x.size(1), n = w.size(0), row_bytes = w.size(1);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const int64_t tile = std::max<int64_t>(16, kTileElems / k);
  auto buf = at::empty({std::min(tile, n), k}, x.options());
  auto y = at::empty({T, n}, x.options());
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int q = static_cast<int>(qtype);
  for (int64_t n0 = 0; n0 < n; n0 += tile) {
    const int64_t rows = std::min(tile, n - n0);
    at::parallel_for(0, rows, std::max<int64_t>(1, 8192 / k), [&](int64_t r0, int64_t r1) {
      const uint8_t* src = wp + (n0 + r0) * row_bytes;
      if (bf16) {
        auto* dst = reinterpret_cast<uint16_t*>(buf.data_ptr<at::BFloat16>()) + r0 * k;
        kern.dequant_bf16(q, src, row_bytes, r1 - r0, k, dst);
      } else {
        kern.dequant(q, src, row_bytes, r1 - r0, k, buf.data_ptr<float>() + r0 * k);
      }
    });
    const auto tile_t = buf.narrow(0, 0, rows).t();  // [K, rows]
    if (rows == n) {
      at::mm_out(y, x, tile_t);  // [T, N]
    } else {
      y.narrow(1, n0, rows).copy_(at::mm(x, tile_t));  // [T, rows]; x @ W^T beats W @ x^T for small T
    }
  }
  return y;
}

}  // namespace

// Dequantize qweight (uint8 [N, row_bytes]) to float32 [N, K].
at::Tensor dequantize(const at::Tensor& qweight, int64_t qtype, int64_t n, int64_t k, const std::string& isa) {
  check_weight(qweight, qtype, k);
  TORCH_CHECK(qweight.size(0) == n, "gguf_ops: qweight has ", qweight.size(0), " rows, not N=", n);
  const Kernels kern = kernels(isa);
  auto out = at::empty({n, k}, at::kFloat);
  const uint8_t* wp = qweight.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t row_bytes = qweight.size(1);
  at::parallel_for(0, n, std::max<int64_t>(1, 8192 / k), [&](int64_t r0, int64_t r1) {
    kern.dequant(static_cast<int>(qtype), wp + r0 * row_bytes, row_bytes, r1 - r0, k, op + r0 * k);
  });
  return out;
}

// y = x W^T (+ bias) in x's dtype; the row path (or the AMX path) for T <= small_t rows of x, tiles + at::mm above.
// amx_from: the rows of bfloat16 x from which isa "amx" runs the AMX path (0: kAmxMinT; < 0: never).
at::Tensor gguf_linear(const at::Tensor& x, const at::Tensor& qweight, int64_t qtype,
                       const c10::optional<at::Tensor>& bias, const std::string& isa, int64_t small_t,
                       int64_t amx_from) {
  TORCH_CHECK(x.dim() == 2, "gguf_ops: x must be [T, K]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "gguf_ops: x must be float32 or bfloat16, not ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && qweight.device().is_cpu(), "gguf_ops: CPU tensors only");
  check_weight(qweight, qtype, x.size(1));
  const Kernels kern = kernels(isa);
  const int64_t T = x.size(0);
#ifdef HERON_GGUF_X86
  const int64_t first = amx_from > 0 ? amx_from : qweight.numel() >= kAmxAllTBytes ? 1 : kAmxMinT;
  if (kern.amx && amx_from >= 0 && T <= small_t && T >= first &&
      x.scalar_type() == at::kBFloat16) {
    return linear_amx(x.contiguous(), qweight, qtype, bias);
  }
#endif
  if (T <= small_t) return linear_rows(kern, x.contiguous(), qweight, qtype, bias);
  at::Tensor y = linear_large(kern, x.contiguous(), qweight, qtype);
  if (bias.has_value() && bias->defined()) y.add_(bias->to(y.scalar_type()));
  return y;
}

// The entry a caller in C++ (a model's native layer stack) reaches through linear_address(): gguf_linear as
// GGUFLinear calls it (no bias, the default ISA, every T on the row or AMX path; a step with prompt tokens on
// the tile unit whatever its size, see heron_plugins.kernels.gguf).
at::Tensor linear_entry(const at::Tensor& x, const at::Tensor& qweight, int64_t qtype, int64_t has_prompt) {
  return gguf_linear(x, qweight, qtype, c10::nullopt, std::string(), int64_t{1} << 62, has_prompt ? 1 : 0);
}

}  // namespace heron_gguf

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("linear_address", [] { return reinterpret_cast<int64_t>(&heron_gguf::linear_entry); },
        "Address of at::Tensor linear_entry(const at::Tensor& x, const at::Tensor& qweight, int64_t qtype, "
        "int64_t has_prompt): gguf_linear as GGUFLinear calls it, for callers in C++");
  m.def("isas", &heron_gguf::cpu_isas, "The ISA paths this CPU can run, best last");
  m.attr("amx_min_t") = heron_gguf::kAmxMinT;  // rows of bfloat16 x from which isa "amx" runs the AMX path
  m.attr("amx_all_t_bytes") = heron_gguf::kAmxAllTBytes;  // weights this large run it at every T
  m.def("dequantize", &heron_gguf::dequantize, "Dequantize GGUF blocks to float32 [N, K]", py::arg("qweight"),
        py::arg("qtype"), py::arg("n"), py::arg("k"), py::arg("isa") = "",
        py::call_guard<py::gil_scoped_release>());
  m.def("gguf_linear", &heron_gguf::gguf_linear, "x @ W^T with W as GGUF blocks", py::arg("x"), py::arg("qweight"),
        py::arg("qtype"), py::arg("bias") = py::none(), py::arg("isa") = "", py::arg("small_t") = int64_t{1} << 62,
        py::arg("amx_from") = int64_t{0}, py::call_guard<py::gil_scoped_release>());
}
