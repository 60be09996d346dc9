// GGUF block kernels: dequantize rows, and multiply dequantized rows with few rows of activations.
//
// This file has no torch dependency. Compiled as it is, it is the portable scalar path
// (namespace heron_gguf::scalar). gguf_quant_avx2.cpp and gguf_quant_avx512.cpp include it again
// under `#pragma GCC target` with GGQ_NS/GGQ_ISA set, which adds the intrinsic loops; the torch
// front end (gguf_quant.cpp) picks one namespace at run time.
//
// Every 32 weights of every type are read as "sub-blocks": int8 values v[32] with, per half of 16,
// a scale dw and an offset c, so that weight = dw * v + c (c only for the types with a min).
// The decode path (dot_rows_*) takes the weights exactly as dequant_rows / dequant_rows_bf16 give
// them to the GEMM path (the SIMD builds dequantize each sub-block in registers; the scalar one
// dequantizes a row into a caller's buffer) and dots them with every activation row in float32 sums
// whose order depends on neither T nor how the rows of x are grouped.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#ifndef GGQ_NS
#define GGQ_NS scalar
#define GGQ_ISA 0  // 0 scalar, 1 AVX2, 2 AVX512 (VNNI)
#endif

#if GGQ_ISA > 0
#include <immintrin.h>
#endif

namespace heron_gguf {
namespace GGQ_NS {
namespace {

enum : int { kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14 };

// IEEE half -> float, exact (subnormals included).
inline float half_to_float(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if GGQ_ISA > 0
  return _cvtsh_ss(h);
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((man & 0x400) == 0) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
#endif
}

// Q4_K / Q5_K: 8 six-bit scales and mins packed in 12 bytes.
inline void k_scales(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 63;
    mn[j] = s[j + 4] & 63;
    sc[j + 4] = (s[j + 8] & 0x0f) | ((s[j] >> 2) & 0x30);
    mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
  }
}

// One sub-block of 32 weights: weight[i] = dw[i/16] * v[i] + (has_c ? c[i/16] : 0).
struct Sub {
  int8_t v[32];
  float dw[2];
  float c[2];
  bool has_c;
};

// Sub-block j of the block at `b` (j < block_size / 32).
inline void unpack(int qtype, const uint8_t* b, int j, Sub& s) {
  s.has_c = false;
  s.c[0] = s.c[1] = 0.f;
  switch (qtype) {
    case kQ4_0:
    case kQ4_1: {
      const bool m = qtype == kQ4_1;
      const uint8_t* qs = b + (m ? 4 : 2);
      for (int l = 0; l < 16; ++l) {
        s.v[l] = static_cast<int8_t>((qs[l] & 0x0f) - (m ? 0 : 8));
        s.v[l + 16] = static_cast<int8_t>((qs[l] >> 4) - (m ? 0 : 8));
      }
      s.dw[0] = s.dw[1] = half_to_float(b);
      if (m) {
        s.has_c = true;
        s.c[0] = s.c[1] = half_to_float(b + 2);
      }
      return;
    }
    case kQ5_0:
    case kQ5_1: {
      const bool m = qtype == kQ5_1;
      uint32_t qh;
      std::memcpy(&qh, b + (m ? 4 : 2), 4);
      const uint8_t* qs = b + (m ? 8 : 6);
      for (int l = 0; l < 16; ++l) {
        const int lo = (qs[l] & 0x0f) | (((qh >> l) & 1) << 4);
        const int hi = (qs[l] >> 4) | (((qh >> (l + 16)) & 1) << 4);
        s.v[l] = static_cast<int8_t>(lo - (m ? 0 : 16));
        s.v[l + 16] = static_cast<int8_t>(hi - (m ? 0 : 16));
      }
      s.dw[0] = s.dw[1] = half_to_float(b);
      if (m) {
        s.has_c = true;
        s.c[0] = s.c[1] = half_to_float(b + 2);
      }
      return;
    }
    case kQ8_0:
      std::memcpy(s.v, b + 2, 32);
      s.dw[0] = s.dw[1] = half_to_float(b);
      return;
    case kQ4_K:
    case kQ5_K: {
      const bool five = qtype == kQ5_K;
      uint8_t sc[8], mn[8];
      k_scales(b + 4, sc, mn);
      const uint8_t* qh = b + 16;
      const uint8_t* qs = b + (five ? 48 : 16) + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        int q = (qs[l] >> shift) & 0x0f;
        if (five) q |= ((qh[l] >> j) & 1) << 4;
        s.v[l] = static_cast<int8_t>(q);
      }
      s.dw[0] = s.dw[1] = half_to_float(b) * static_cast<float>(sc[j]);
      s.has_c = true;
      s.c[0] = s.c[1] = -(half_to_float(b + 2) * static_cast<float>(mn[j]));
      return;
    }
    case kQ6_K: {
      const uint8_t* ql = b + 64 * (j / 4) + 32 * (j % 2);
      const uint8_t* qh = b + 128 + 32 * (j / 4);
      const int lshift = 4 * ((j % 4) / 2), hshift = 2 * (j % 4);
      for (int l = 0; l < 32; ++l) {
        const int q = ((ql[l] >> lshift) & 0x0f) | (((qh[l] >> hshift) & 3) << 4);
        s.v[l] = static_cast<int8_t>(q - 32);
      }
      const float d = half_to_float(b + 208);
      const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
      s.dw[0] = d * static_cast<float>(scales[2 * j]);
      s.dw[1] = d * static_cast<float>(scales[2 * j + 1]);
      return;
    }
    default:
      return;
  }
}

inline int block_size(int qtype) { return qtype >= kQ4_K ? 256 : 32; }

inline int type_size(int qtype) {
  switch (qtype) {
    case kQ4_0: return 18;
    case kQ4_1: return 20;
    case kQ5_0: return 22;
    case kQ5_1: return 24;
    case kQ8_0: return 34;
    case kQ4_K: return 144;
    case kQ5_K: return 176;
    case kQ6_K: return 210;
    default: return 0;
  }
}

#if GGQ_ISA > 0
#include "gguf_quant_simd.cpp"
#endif

// float -> bfloat16 bits, round to nearest even (as c10::BFloat16).
inline uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN
  return static_cast<uint16_t>((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

inline void put(float* o, float v) { *o = v; }
inline void put(uint16_t* o, float v) { *o = to_bf16(v); }

template <typename Out>
void dequant_generic(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, Out* out) {
  const int bs = block_size(qtype), ts = type_size(qtype), nsub = bs / 32;
  Sub s;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    Out* o = out + r * k;
    for (int64_t b = 0; b < k / bs; ++b) {
      for (int j = 0; j < nsub; ++j) {
        unpack(qtype, row + b * ts, j, s);
        Out* oj = o + b * bs + j * 32;
        for (int l = 0; l < 32; ++l) {
          const float v = s.dw[l / 16] * static_cast<float>(s.v[l]);
          put(oj + l, s.has_c ? v + s.c[l / 16] : v);
        }
      }
    }
  }
}

// bfloat16 bits -> float (exact).
inline float widen(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float widen(float v) { return v; }

// y[t * ldy + r] = w[r] . x[t] (w: dequantized rows [rows, k]; x: float32 [T, k]) in 8 interleaved
// partial sums (lanes for the vectorizer), combined pairwise; k is a multiple of 32. The scalar build's
// dot (the SIMD builds run theirs, fused with the dequantization, from gguf_quant_simd.cpp).
template <typename W>
void dot_buf(const W* w, int rows, int64_t k, const float* x, int64_t T, float* y, int64_t ldy) {
  for (int r = 0; r < rows; ++r) {
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = x + t * k;
      float acc[8] = {};
      for (int64_t i = 0; i < k; i += 8) {
        for (int l = 0; l < 8; ++l) acc[l] += widen(w[r * k + i + l]) * xt[i + l];
      }
      y[t * ldy + r] = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
  }
}

}  // namespace

// Dequantize `rows` rows of `k` weights (row stride `row_bytes`) into out[rows, k] (float32), with
// the same float operations, in the same order, as gguf-py's numpy reference.
void dequant_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, float* out) {
#if GGQ_ISA > 0
  if (simd_dequant_rows(qtype, w, row_bytes, rows, k, out)) return;
#endif
  dequant_generic(qtype, w, row_bytes, rows, k, out);
}

// The same, rounded to bfloat16 (bits in uint16_t).
void dequant_rows_bf16(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, uint16_t* out) {
#if GGQ_ISA > 0
  if (simd_dequant_rows(qtype, w, row_bytes, rows, k, out)) return;
#endif
  dequant_generic(qtype, w, row_bytes, rows, k, out);
}

// y[t * ldy + n] = (row n of W, as dequant_rows gives it) . x[t] for n in [n0, n1), t < T, in float32
// sums whose order depends on neither T nor n0, n1. x: float32 [T, k]; buf: float32 [kMaxRows, k], the
// calling thread's scratch (the scalar build's; the SIMD builds dequantize in registers).
void dot_rows_f32(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k, const float* x,
                  int64_t T, float* y, int64_t ldy, float* buf) {
#if GGQ_ISA > 0
  if (simd_dot_rows<float>(qtype, w, row_bytes, n0, n1, k, x, T, y, ldy, buf)) return;
#endif
  for (int64_t n = n0; n < n1; ++n) {
    dequant_rows(qtype, w + n * row_bytes, row_bytes, 1, k, buf);
    dot_buf(buf, 1, k, x, T, y + n, ldy);
  }
}

// The same with the rows as dequant_rows_bf16 gives them (bfloat16); x: the bfloat16 activations as
// float32 [T, k] (xb, their bits, serves the AVX512-BF16 variant only).
void dot_rows_bf16(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                   const uint16_t* xb, const float* x, int64_t T, float* y, int64_t ldy, uint16_t* buf) {
  (void)xb;
#if GGQ_ISA > 0
  if (simd_dot_rows<uint16_t>(qtype, w, row_bytes, n0, n1, k, x, T, y, ldy, buf)) return;
#endif
  for (int64_t n = n0; n < n1; ++n) {
    dequant_rows_bf16(qtype, w + n * row_bytes, row_bytes, 1, k, buf);
    dot_buf(buf, 1, k, x, T, y + n, ldy);
  }
}

#if GGQ_ISA == 2
// dot_rows_bf16 with vdpbf16ps on the bfloat16 activations themselves (CPUs with AVX512-BF16).
GGQ_BF16_TARGET void dot_rows_bf16_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1,
                                      int64_t k, const uint16_t* xb, const float* x, int64_t T, float* y,
                                      int64_t ldy, uint16_t* buf) {
  if (simd_dot_rows_dp(qtype, w, row_bytes, n0, n1, k, xb, T, y, ldy, buf)) return;
  dot_rows_bf16(qtype, w, row_bytes, n0, n1, k, xb, x, T, y, ldy, buf);
}

// dequant_rows_bf16 with AVX512-BF16 conversions (the same bits).
GGQ_BF16_TARGET void dequant_rows_bf16_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                                          uint16_t* out) {
  if (simd_dequant_rows_bf16_dp(qtype, w, row_bytes, rows, k, out)) return;
  dequant_rows_bf16(qtype, w, row_bytes, rows, k, out);
}

#ifdef GGQ_AMX_TARGET
// y[t * ldy + n] (bfloat16) for weight rows [n0, n1) and T <= 16 tokens of xv (amx::pack_x's layout)
// on the tile unit; bias: bfloat16 [N] or null. Every type the front end accepts.
GGQ_AMX_TARGET void amx_few_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                                 const uint16_t* xv, int64_t T, const uint16_t* bias, uint16_t* y, int64_t ldy) {
  simd_amx_few_rows(qtype, w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
}
#endif
#endif

}  // namespace GGQ_NS
}  // namespace heron_gguf
