// GGUF quantized matmul for CPU: the torch front end of the gguf_ops kernels.
//
// y[T, N] = x[T, K] W^T with W as the file's packed blocks (uint8 [N, row_bytes]). Few rows of x
// (decode): x is quantized per 32 to int8 and each weight row is dotted in place with integer sums,
// rows split over at::parallel_for. Many rows (prefill): tiles of weight rows are dequantized into a
// small buffer (float32, or bfloat16 for bfloat16 x) and multiplied with at::mm; no whole dequantized
// matrix is ever held.
// The block kernels live in gguf_quant_kernels.cpp, built three times (scalar, AVX2, AVX512) and
// chosen at run time by what this CPU supports, or by the `isa` argument.

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
  void dot_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,           \
                const int8_t* xq, const float* xd, const float* xs, int64_t T, float* y, int64_t ldy);       \
  }

HERON_GGUF_DECLARE(scalar)
#if defined(__x86_64__) && defined(__GNUC__)
HERON_GGUF_DECLARE(avx2)
HERON_GGUF_DECLARE(avx512)
#define HERON_GGUF_X86 1
#endif

namespace {

using DequantFn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, float*);
using DequantBf16Fn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, uint16_t*);
using DotFn = void (*)(int, const uint8_t*, int64_t, int64_t, int64_t, int64_t, const int8_t*, const float*,
                       const float*, int64_t, float*, int64_t);

struct Kernels {
  DequantFn dequant;
  DequantBf16Fn dequant_bf16;
  DotFn dot;
};

// The ISA paths this CPU can run, best last: "scalar", then "avx2", then "avx512".
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
  if (want == "avx512") return {avx512::dequant_rows, avx512::dequant_rows_bf16, avx512::dot_rows};
  if (want == "avx2") return {avx2::dequant_rows, avx2::dequant_rows_bf16, avx2::dot_rows};
#endif
  return {scalar::dequant_rows, scalar::dequant_rows_bf16, scalar::dot_rows};
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

// Weight rows worth one parallel task: at least ~32k multiply-adds.
int64_t grain(int64_t k, int64_t t) { return std::max<int64_t>(1, (int64_t{1} << 15) / std::max<int64_t>(1, k * t)); }

// x [T, K] (float or bfloat16) -> xq int8 [T, K], xd [T, K/32] (scale), xs [T, K/32, 2] (scale * sum per half).
template <typename In>
void quantize_rows(const In* x, int64_t T, int64_t k, int8_t* xq, float* xd, float* xs) {
  const int64_t nb = k / 32;
  float v[32];
  for (int64_t i = 0; i < T * nb; ++i) {
    float amax = 0.f;
    for (int l = 0; l < 32; ++l) {
      v[l] = static_cast<float>(x[i * 32 + l]);
      amax = std::max(amax, std::fabs(v[l]));
    }
    const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
    int32_t sum[2] = {0, 0};
    for (int l = 0; l < 32; ++l) {
      const auto q = static_cast<int8_t>(std::nearbyint(v[l] * id));
      xq[i * 32 + l] = q;
      sum[l / 16] += q;
    }
    xd[i] = d;
    xs[2 * i] = d * static_cast<float>(sum[0]);
    xs[2 * i + 1] = d * static_cast<float>(sum[1]);
  }
}

// The int8 dot path. Scratch lives in thread-local vectors, not tensors: at T = 1 a matmul takes
// ~10-50 us, and each tensor allocation or dtype conversion through the dispatcher costs ~1-2 us.
at::Tensor linear_small(const Kernels& kern, const at::Tensor& x, const at::Tensor& w, int64_t qtype,
                        const c10::optional<at::Tensor>& bias) {
  const int64_t T = x.size(0), k = x.size(1), n = w.size(0), nb = k / 32;
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xd, xs, yf;
  xq.resize(T * k);
  xd.resize(T * nb);
  xs.resize(T * nb * 2);
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  if (bf16) {
    quantize_rows(x.data_ptr<at::BFloat16>(), T, k, xq.data(), xd.data(), xs.data());
  } else {
    quantize_rows(x.data_ptr<float>(), T, k, xq.data(), xd.data(), xs.data());
  }
  auto y = at::empty({T, n}, x.options());
  const bool direct = !bf16 && !(bias.has_value() && bias->defined());
  if (!direct) yf.resize(T * n);
  float* yp = direct ? y.data_ptr<float>() : yf.data();
  const uint8_t* wp = w.data_ptr<uint8_t>();
  const int64_t row_bytes = w.size(1);
  const int8_t* q = xq.data();
  const float *d = xd.data(), *s = xs.data();
  at::parallel_for(0, n, grain(k, T), [&](int64_t n0, int64_t n1) {
    kern.dot(static_cast<int>(qtype), wp, row_bytes, n0, n1, k, q, d, s, T, yp, n);
  });
  if (direct) return y;
  at::Tensor b32;
  const float* bp = nullptr;
  if (bias.has_value() && bias->defined()) {
    b32 = bias->to(at::kFloat).contiguous();
    bp = b32.data_ptr<float>();
  }
  if (bf16) {
    at::BFloat16* out = y.data_ptr<at::BFloat16>();
    for (int64_t i = 0; i < T * n; ++i) out[i] = at::BFloat16(yp[i] + (bp ? bp[i % n] : 0.f));
  } else {
    float* out = y.data_ptr<float>();
    for (int64_t i = 0; i < T * n; ++i) out[i] = yp[i] + bp[i % n];
  }
  return y;
}

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

// y = x W^T (+ bias) in x's dtype; the int8 dot path for T <= small_t rows of x, tiles + at::mm above.
at::Tensor gguf_linear(const at::Tensor& x, const at::Tensor& qweight, int64_t qtype,
                       const c10::optional<at::Tensor>& bias, const std::string& isa, int64_t small_t) {
  TORCH_CHECK(x.dim() == 2, "gguf_ops: x must be [T, K]");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "gguf_ops: x must be float32 or bfloat16, not ", x.scalar_type());
  TORCH_CHECK(x.device().is_cpu() && qweight.device().is_cpu(), "gguf_ops: CPU tensors only");
  check_weight(qweight, qtype, x.size(1));
  const Kernels kern = kernels(isa);
  if (x.size(0) <= small_t) return linear_small(kern, x.contiguous(), qweight, qtype, bias);
  at::Tensor y = linear_large(kern, x.contiguous(), qweight, qtype);
  if (bias.has_value() && bias->defined()) y.add_(bias->to(y.scalar_type()));
  return y;
}

}  // namespace heron_gguf

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("isas", &heron_gguf::cpu_isas, "The ISA paths this CPU can run, best last");
  m.def("dequantize", &heron_gguf::dequantize, "Dequantize GGUF blocks to float32 [N, K]", py::arg("qweight"),
        py::arg("qtype"), py::arg("n"), py::arg("k"), py::arg("isa") = "",
        py::call_guard<py::gil_scoped_release>());
  m.def("gguf_linear", &heron_gguf::gguf_linear, "x @ W^T with W as GGUF blocks", py::arg("x"), py::arg("qweight"),
        py::arg("qtype"), py::arg("bias") = py::none(), py::arg("isa") = "", py::arg("small_t") = 16,
        py::call_guard<py::gil_scoped_release>());
}
