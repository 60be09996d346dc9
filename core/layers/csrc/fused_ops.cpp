// Small fused element-wise ops for a decode step: each replaces two to four ATen ops (and their
// temporaries) with one pass over the rows. The math and its rounding follow the pure-torch
// formulas in heron.layers (norm.py, rotary.py); built with -ffp-contract=off, so no product
// and sum are merged into an fma that torch would round twice: in bfloat16 every intermediate
// that torch would round to bfloat16 is rounded here too, so results are bit-identical except
// for the order of the fp32 sum of squares in the RMS norm.
//
// Batch invariance: a row's result depends on that row alone. Rows are split over threads, a row
// never is, and the sum of squares is added in one fixed order that depends only on the row's
// length (sum_squares), so a token gets the same bits whether its step holds 1 row or 1000 and
// whatever the thread count.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// rows per parallel chunk: a row is ~1 us of work, so a decode batch (<= 64 rows) stays on one
// thread; waking the pool for it costs more than it saves, and far more when cores are shared.
// Chunks hold whole rows, so the split changes no result.
constexpr int64_t kGrain = 64;

template <typename T>
inline float f32(T v) { return static_cast<float>(v); }

template <typename T>
inline T round_to(float v) { return static_cast<T>(v); }

// partial sums of the sum of squares: element j goes to lane j % kLanes
constexpr int64_t kLanes = 16;

// sum of v[j]^2 in fp32, in an order fixed by n alone: kLanes running sums, then a pairwise fold.
// The lanes are independent, so the compiler vectorizes them without reassociating anything
// (the result does not depend on the vector width the build targets).
template <typename T>
inline float sum_squares(const T* v, int64_t n) {
  float lane[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int64_t k = 0; k < kLanes; ++k) lane[k] += f32(v[j + k]) * f32(v[j + k]);
  }
  for (int64_t k = 0; j + k < n; ++k) lane[k] += f32(v[j + k]) * f32(v[j + k]);
  for (int64_t width = kLanes / 2; width > 0; width /= 2) {
    for (int64_t k = 0; k < width; ++k) lane[k] += lane[k + width];
  }
  return lane[0];
}

// s = x + r (rounded to T; s = x without r); y = w * T(s / rms(s))
template <typename T>
void rms_norm_rows(const T* x, const T* r, const T* w, T* y, T* s, int64_t rows, int64_t n, int64_t x_stride,
                   int64_t r_stride, float eps) {
  at::parallel_for(0, rows, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* xi = x + i * x_stride;
      const T* si = xi;
      if (r != nullptr) {
        const T* ri = r + i * r_stride;
        T* out = s + i * n;
        for (int64_t j = 0; j < n; ++j) out[j] = round_to<T>(f32(xi[j]) + f32(ri[j]));
        si = out;
      }
      const float inv = 1.f / std::sqrt(sum_squares(si, n) / static_cast<float>(n) + eps);
      T* yi = y + i * n;
      for (int64_t j = 0; j < n; ++j) yi[j] = round_to<T>(f32(w[j]) * f32(round_to<T>(f32(si[j]) * inv)));
    }
  });
}

// out[t, h, :rd] = T(x * cos) + T(roll(x, rd/2) * signed_sin); channels past rd are copied
template <typename T>
void rotate_rows(const T* x, const T* cos, const T* sin, T* out, int64_t tokens, int64_t heads, int64_t d,
                 int64_t rd, int64_t x_tok_stride, int64_t x_head_stride, int64_t cos_stride, int64_t sin_stride) {
  const int64_t half = rd / 2;
  at::parallel_for(0, tokens, kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const T* c = cos + t * cos_stride;
      const T* s = sin + t * sin_stride;
      for (int64_t h = 0; h < heads; ++h) {
        const T* xh = x + t * x_tok_stride + h * x_head_stride;
        T* oh = out + (t * heads + h) * d;
        for (int64_t j = 0; j < rd; ++j) {
          const int64_t k = j < half ? j + half : j - half;
          const float a = f32(round_to<T>(f32(xh[j]) * f32(c[j])));
          const float b = f32(round_to<T>(f32(xh[k]) * f32(s[j])));
          oh[j] = round_to<T>(a + b);
        }
        for (int64_t j = rd; j < d; ++j) oh[j] = xh[j];
      }
    }
  });
}

void check_rows(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, name, " must be 2-D with contiguous rows");
}

// The index of the first NaN of v[0 .. n) (-1: none).
template <typename T>
int64_t first_nan(const T* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = f32(v[i]);
    if (x != x) return i;
  }
  return -1;
}

#if defined(__AVX512F__)
inline __m512 load_f32x16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_f32x16(const c10::BFloat16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#endif

// argmax of a row as torch.argmax gives it: the index of the first largest value, or of the first
// NaN (torch orders NaN above everything). torch's own bfloat16 argmax widens element by element
// (~240 us for one row of a 49152-word vocabulary here, 7.6 ms for 64 rows); this reads 64 values a
// step into 4 x 16 lanes, each keeping its first maximum, then takes the smallest index among the
// lanes that hold the row's maximum. Comparisons are exact, so the result is torch's.
template <typename T>
int64_t argmax_row(const T* v, int64_t n) {
  int64_t i = 0, best = 0;
  float top = f32(v[0]);
#if defined(__AVX512F__)
  constexpr int kSets = 4;
  if (n >= 16 * kSets) {
    __m512 val[kSets];
    __m512i idx[kSets];
    __mmask16 nan = 0;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int s = 0; s < kSets; ++s) {
      val[s] = load_f32x16(v + 16 * s);
      idx[s] = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * s));
      nan |= _mm512_cmp_ps_mask(val[s], val[s], _CMP_UNORD_Q);
    }
    for (i = 16 * kSets; i + 16 * kSets <= n; i += 16 * kSets) {
      for (int s = 0; s < kSets; ++s) {
        const __m512 x = load_f32x16(v + i + 16 * s);
        nan |= _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
        const __mmask16 gt = _mm512_cmp_ps_mask(x, val[s], _CMP_GT_OQ);  // strictly: a lane keeps its first
        val[s] = _mm512_mask_mov_ps(val[s], gt, x);
        const __m512i at = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(i + 16 * s)));
        idx[s] = _mm512_mask_mov_epi32(idx[s], gt, at);
      }
    }
    if (nan) return first_nan(v, n);
    __m512 m = val[0];
    for (int s = 1; s < kSets; ++s) m = _mm512_max_ps(m, val[s]);
    top = _mm512_reduce_max_ps(m);
    const __m512 topv = _mm512_set1_ps(top);
    int32_t first = INT32_MAX;
    for (int s = 0; s < kSets; ++s) {
      const __mmask16 eq = _mm512_cmp_ps_mask(val[s], topv, _CMP_EQ_OQ);
      first = std::min(first, _mm512_mask_reduce_min_epi32(eq, idx[s]));
    }
    best = first;
  }
#endif
  for (; i < n; ++i) {  // the tail, after every vector index (or the whole row)
    const float x = f32(v[i]);
    if (x != x) return first_nan(v, n);
    if (x > top) {
      top = x;
      best = i;
    }
  }
  return best;
}

}  // namespace

void check_norm(const torch::Tensor& x, const torch::Tensor& weight) {
  check_rows(x, "x");
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.is_contiguous() && weight.numel() == x.size(1),
              "rms_norm: the weight must be [H] in x's dtype");
}

std::vector<torch::Tensor> add_rms_norm(const torch::Tensor& x, const torch::Tensor& residual,
                                        const torch::Tensor& weight, double eps) {
  check_norm(x, weight);
  check_rows(residual, "residual");
  TORCH_CHECK(x.sizes() == residual.sizes() && x.scalar_type() == residual.scalar_type(),
              "add_rms_norm: x and residual differ in shape or dtype");
  auto y = torch::empty(x.sizes(), x.options());
  auto s = torch::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, x.scalar_type(), "add_rms_norm", [&] {
    rms_norm_rows<scalar_t>(x.data_ptr<scalar_t>(), residual.data_ptr<scalar_t>(), weight.data_ptr<scalar_t>(),
                            y.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), x.size(0), x.size(1), x.stride(0),
                            residual.stride(0), static_cast<float>(eps));
  });
  return {y, s};
}

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  check_norm(x, weight);
  auto y = torch::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, x.scalar_type(), "rms_norm", [&] {
    rms_norm_rows<scalar_t>(x.data_ptr<scalar_t>(), nullptr, weight.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                            nullptr, x.size(0), x.size(1), x.stride(0), 0, static_cast<float>(eps));
  });
  return y;
}

torch::Tensor rotate_heads(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.stride(2) == 1, "rotate_heads: x must be [T, heads, D] with contiguous heads");
  TORCH_CHECK(cos.dim() == 3 && cos.stride(2) == 1 && sin.stride(2) == 1 && cos.sizes() == sin.sizes() &&
                  cos.size(0) == x.size(0) && cos.scalar_type() == x.scalar_type() &&
                  sin.scalar_type() == x.scalar_type() && cos.size(2) <= x.size(2) && cos.size(2) % 2 == 0,
              "rotate_heads: cos/sin must be [T, 1, rd] in x's dtype");
  auto out = torch::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::BFloat16, x.scalar_type(), "rotate_heads", [&] {
    rotate_rows<scalar_t>(x.data_ptr<scalar_t>(), cos.data_ptr<scalar_t>(), sin.data_ptr<scalar_t>(),
                          out.data_ptr<scalar_t>(), x.size(0), x.size(1), x.size(2), cos.size(2), x.stride(0),
                          x.stride(1), cos.stride(0), sin.stride(0));
  });
  return out;
}

torch::Tensor argmax_rows(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0 && x.stride(1) == 1 && x.size(1) < INT32_MAX,
              "argmax_rows: x must be [T, V] (V > 0) with contiguous rows");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, "argmax_rows: x must be fp32 or bf16");
  auto out = torch::empty({x.size(0)}, x.options().dtype(torch::kLong));
  int64_t* o = out.data_ptr<int64_t>();
  const int64_t n = x.size(1), ld = x.stride(0);
  auto rows = [&](auto* p) {
    // a row of a vocabulary is a few us: several rows per chunk before a second thread pays
    at::parallel_for(0, x.size(0), 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) o[r] = argmax_row(p + r * ld, n);
    });
  };
  if (x.scalar_type() == at::kFloat) {
    rows(x.data_ptr<float>());
  } else {
    rows(x.data_ptr<c10::BFloat16>());
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("addresses", [] {
    return std::vector<int64_t>{reinterpret_cast<int64_t>(&rms_norm), reinterpret_cast<int64_t>(&add_rms_norm),
                                reinterpret_cast<int64_t>(&rotate_heads)};
  }, "Addresses of rms_norm, add_rms_norm and rotate_heads (the C++ signatures above), for callers in C++");
  m.def("add_rms_norm", &add_rms_norm, "(normed, x + residual) of [T, H] rows");
  m.def("rms_norm", &rms_norm, "RMS norm of [T, H] rows");
  m.def("rotate_heads", &rotate_heads, "rotary on [T, heads, D] with [T, 1, rd] cos and signed sin");
  m.def("argmax_rows", &argmax_rows, "torch.argmax(x, -1) of [T, V] rows: first maximum, NaN above all");
}
