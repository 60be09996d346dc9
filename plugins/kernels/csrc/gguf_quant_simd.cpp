// Intrinsic loops, included by gguf_quant_kernels.cpp inside an ISA namespace (GGQ_ISA 1 = AVX2,
// 2 = AVX512); compiled on its own it is empty.
//
// Dequantization: a sub-block of 32 weights is unpacked to 32 byte codes (unsigned, or signed for
// Q8_0) and written as dw[half] * float(code - zero) (+ off for the types with a min), the float
// operations of gguf-py, 8 at a time, as float32 or rounded to bfloat16.
// Decode dots (dot_buf): one dequantized row against NT <= 4 activation rows; each activation row
// has its own accumulators, so its sums run in the same order whatever T is or how it is grouped.
#if defined(GGQ_ISA) && GGQ_ISA > 0

inline __m256i low_nibbles(__m256i v) { return _mm256_and_si256(v, _mm256_set1_epi8(0x0f)); }
inline __m256i high_nibbles(__m256i v) { return _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0f)); }

// 16 packed bytes -> 32 codes: low nibbles (weights 0-15) then high nibbles (16-31).
inline __m256i nibbles16(const uint8_t* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return low_nibbles(_mm256_set_m128i(_mm_srli_epi16(v, 4), v));
}

// Bit l of a little-endian uint32 -> 0x10 in byte l.
inline __m256i bits_to_0x10(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3,
                                        3, 3, 3, 3, 3, 3);
  const __m256i mask = _mm256_set1_epi64x(0x8040201008040201LL);
  const __m256i sel = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuf), mask);
  return _mm256_and_si256(_mm256_cmpeq_epi8(sel, mask), _mm256_set1_epi8(0x10));
}

// What one block decodes to for its sub-blocks: scales per half and offsets per half.
template <int NSUB>
struct Head {
  float dw[NSUB][2];
  float off[NSUB][2];
};

// Per type: kBytes, kSub, kSigned, kZero, kMin; head(b, h); codes(b, j).
struct TQ4_0 {
  static constexpr int kBytes = 18, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 8;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h) {
    const float d = half_to_float(b);
    h.dw[0][0] = h.dw[0][1] = d;
    h.off[0][0] = h.off[0][1] = -8.f * d;
  }
  static __m256i codes(const uint8_t* b, int) { return nibbles16(b + 2); }
};

struct TQ4_1 {
  static constexpr int kBytes = 20, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = true;
  static void head(const uint8_t* b, Head<1>& h) {
    h.dw[0][0] = h.dw[0][1] = half_to_float(b);
    h.off[0][0] = h.off[0][1] = half_to_float(b + 2);
  }
  static __m256i codes(const uint8_t* b, int) { return nibbles16(b + 4); }
};

struct TQ5_0 {
  static constexpr int kBytes = 22, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 16;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h) {
    const float d = half_to_float(b);
    h.dw[0][0] = h.dw[0][1] = d;
    h.off[0][0] = h.off[0][1] = -16.f * d;
  }
  static __m256i codes(const uint8_t* b, int) { return _mm256_or_si256(nibbles16(b + 6), bits_to_0x10(b + 2)); }
};

struct TQ5_1 {
  static constexpr int kBytes = 24, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = true;
  static void head(const uint8_t* b, Head<1>& h) {
    h.dw[0][0] = h.dw[0][1] = half_to_float(b);
    h.off[0][0] = h.off[0][1] = half_to_float(b + 2);
  }
  static __m256i codes(const uint8_t* b, int) { return _mm256_or_si256(nibbles16(b + 8), bits_to_0x10(b + 4)); }
};

struct TQ8_0 {
  static constexpr int kBytes = 34, kSub = 1;
  static constexpr bool kSigned = true;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h) {
    h.dw[0][0] = h.dw[0][1] = half_to_float(b);
    h.off[0][0] = h.off[0][1] = 0.f;
  }
  static __m256i codes(const uint8_t* b, int) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)); }
};

inline void k_head(const uint8_t* b, Head<8>& h) {
  uint8_t sc[8], mn[8];
  k_scales(b + 4, sc, mn);
  const float d = half_to_float(b), dmin = half_to_float(b + 2);
  for (int j = 0; j < 8; ++j) {
    h.dw[j][0] = h.dw[j][1] = d * static_cast<float>(sc[j]);
    h.off[j][0] = h.off[j][1] = -(dmin * static_cast<float>(mn[j]));
  }
}

struct TQ4_K {
  static constexpr int kBytes = 144, kSub = 8;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = true;
  static void head(const uint8_t* b, Head<8>& h) { k_head(b, h); }
  static __m256i codes(const uint8_t* b, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * (j / 2)));
    return j % 2 ? high_nibbles(v) : low_nibbles(v);
  }
};

struct TQ5_K {
  static constexpr int kBytes = 176, kSub = 8;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = true;
  static void head(const uint8_t* b, Head<8>& h) { k_head(b, h); }
  static __m256i codes(const uint8_t* b, int j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 48 + 32 * (j / 2)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
    const __m256i bit = _mm256_set1_epi8(static_cast<char>(1 << j));
    const __m256i hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit), _mm256_set1_epi8(0x10));
    return _mm256_or_si256(j % 2 ? high_nibbles(v) : low_nibbles(v), hi);
  }
};

struct TQ6_K {
  static constexpr int kBytes = 210, kSub = 8;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 32;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<8>& h) {
    const float d = half_to_float(b + 208);
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    for (int j = 0; j < 8; ++j) {
      for (int half = 0; half < 2; ++half) {
        h.dw[j][half] = d * static_cast<float>(sc[2 * j + half]);
        h.off[j][half] = -32.f * h.dw[j][half];
      }
    }
  }
  static __m256i codes(const uint8_t* b, int j) {
    const __m256i ql = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * (j / 4) + 32 * (j % 2)));
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * (j / 4)));
    const __m256i lo = (j % 4) / 2 ? high_nibbles(ql) : low_nibbles(ql);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * (j % 4)), _mm256_set1_epi8(3));
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
  }
};

// float -> bfloat16 bits, round to nearest even (as c10::BFloat16 for finite values).
inline __m128i to_bf16(__m256 f) {
  const __m256i b = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8));
}

inline void store8(float* out, __m256 v) { _mm256_storeu_ps(out, v); }
inline void store8(uint16_t* out, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), to_bf16(v)); }

#if GGQ_ISA == 2
inline void store16(float* out, __m512 v) { _mm512_storeu_ps(out, v); }
inline void store16(uint16_t* out, __m512 v) {  // round to nearest even, as to_bf16
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(r));
}

// Weights 16 * half .. 16 * half + 15 of a sub-block (codes c, scale dw, offset off) as gguf-py computes them.
template <class Q, typename Out>
inline void dequant16(__m256i c, int half, float dw, float off, Out* o) {
  const __m128i c16 = half ? _mm256_extracti128_si256(c, 1) : _mm256_castsi256_si128(c);
  __m512i ci = Q::kSigned ? _mm512_cvtepi8_epi32(c16) : _mm512_cvtepu8_epi32(c16);
  if (Q::kZero != 0) ci = _mm512_sub_epi32(ci, _mm512_set1_epi32(Q::kZero));
  __m512 f = _mm512_mul_ps(_mm512_set1_ps(dw), _mm512_cvtepi32_ps(ci));
  if (Q::kMin) f = _mm512_add_ps(f, _mm512_set1_ps(off));
  store16(o, f);
}
#endif

// Rows of weights, each as gguf-py computes it: dw * float(code - zero), then + off for the types with a min.
template <class Q, typename Out>
void dequant_rows_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, Out* out) {
  Head<Q::kSub> h;
#if GGQ_ISA != 2
  alignas(32) uint8_t codes[32];
#endif
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t b = 0; b < k / (32 * Q::kSub); ++b) {
      const uint8_t* blk = row + b * Q::kBytes;
      Q::head(blk, h);
      for (int j = 0; j < Q::kSub; ++j) {
        Out* o = out + r * k + (b * Q::kSub + j) * 32;
#if GGQ_ISA == 2
        const __m256i c = Q::codes(blk, j);
        dequant16<Q>(c, 0, h.dw[j][0], h.off[j][0], o);
        dequant16<Q>(c, 1, h.dw[j][1], h.off[j][1], o + 16);
#else
        _mm256_store_si256(reinterpret_cast<__m256i*>(codes), Q::codes(blk, j));
        for (int part = 0; part < 4; ++part) {
          const __m128i c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 8 * part));
          const __m256i c = Q::kSigned ? _mm256_cvtepi8_epi32(c8) : _mm256_cvtepu8_epi32(c8);
          const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(Q::kZero)));
          __m256 f = _mm256_mul_ps(_mm256_set1_ps(h.dw[j][part / 2]), v);
          if (Q::kMin) f = _mm256_add_ps(f, _mm256_set1_ps(h.off[j][part / 2]));
          store8(o + 8 * part, f);
        }
#endif
      }
    }
  }
}

template <typename Out>
inline bool simd_dequant_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, Out* out) {
  switch (qtype) {
    case kQ4_0: dequant_rows_t<TQ4_0>(w, row_bytes, rows, k, out); return true;
    case kQ4_1: dequant_rows_t<TQ4_1>(w, row_bytes, rows, k, out); return true;
    case kQ5_0: dequant_rows_t<TQ5_0>(w, row_bytes, rows, k, out); return true;
    case kQ5_1: dequant_rows_t<TQ5_1>(w, row_bytes, rows, k, out); return true;
    case kQ8_0: dequant_rows_t<TQ8_0>(w, row_bytes, rows, k, out); return true;
    case kQ4_K: dequant_rows_t<TQ4_K>(w, row_bytes, rows, k, out); return true;
    case kQ5_K: dequant_rows_t<TQ5_K>(w, row_bytes, rows, k, out); return true;
    case kQ6_K: dequant_rows_t<TQ6_K>(w, row_bytes, rows, k, out); return true;
    default: return false;
  }
}

// Widened 16 (AVX512) or 8 (AVX2) weights of a dequantized row: float32 as stored, bfloat16 bits shifted up.
#if GGQ_ISA == 2
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// y[tt * ldy + r] = w[r] . x[tt] for r < R weight rows (stride k), tt < NT: two 16-lane sums per (r, tt),
// 32 values a step, fused multiply-adds. Each (r, tt) runs the same sequence whatever R and NT are.
template <int R, int NT, typename W>
inline void dot_buf_nt(const W* w, int64_t k, const float* x, float* y, int64_t ldy) {
  __m512 a[R][NT], b[R][NT];
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) a[r][tt] = b[r][tt] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; i += 32) {
    __m512 w0[R], w1[R];
    for (int r = 0; r < R; ++r) {
      w0[r] = load16(w + r * k + i);
      w1[r] = load16(w + r * k + i + 16);
    }
    for (int tt = 0; tt < NT; ++tt) {
      const __m512 x0 = _mm512_loadu_ps(x + tt * k + i), x1 = _mm512_loadu_ps(x + tt * k + i + 16);
      for (int r = 0; r < R; ++r) {
        a[r][tt] = _mm512_fmadd_ps(w0[r], x0, a[r][tt]);
        b[r][tt] = _mm512_fmadd_ps(w1[r], x1, b[r][tt]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) y[tt * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r][tt], b[r][tt]));
  }
}

// The bfloat16 rows against bfloat16 activations with vdpbf16ps: 32 products a step into 16 lanes per
// (r, tt) (bfloat16 products are exact in float32, as in the GEMM path's bf16 kernel).
template <int R, int NT>
GGQ_BF16_TARGET inline void dot_buf_dp_nt(const uint16_t* w, int64_t k, const uint16_t* x, float* y, int64_t ldy) {
  __m512 a[R][NT];
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) a[r][tt] = _mm512_setzero_ps();
  }
  for (int64_t i = 0; i < k; i += 32) {
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + r * k + i);
    for (int tt = 0; tt < NT; ++tt) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + tt * k + i);
      for (int r = 0; r < R; ++r) a[r][tt] = _mm512_dpbf16_ps(a[r][tt], wv[r], xv);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) y[tt * ldy + r] = _mm512_reduce_add_ps(a[r][tt]);
  }
}

template <int R>
GGQ_BF16_TARGET inline void dot_buf_dp_r(const uint16_t* w, int64_t k, const uint16_t* x, int64_t T, float* y,
                                         int64_t ldy) {
  for (int64_t t = 0; t < T; t += 4) {
    const uint16_t* xt = x + t * k;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, T - t)) {
      case 4: dot_buf_dp_nt<R, 4>(w, k, xt, yt, ldy); break;
      case 3: dot_buf_dp_nt<R, 3>(w, k, xt, yt, ldy); break;
      case 2: dot_buf_dp_nt<R, 2>(w, k, xt, yt, ldy); break;
      default: dot_buf_dp_nt<R, 1>(w, k, xt, yt, ldy); break;
    }
  }
}

// y[t * ldy + r] = w[r] . x[t] for r < rows (<= kMaxRows), t < T, with vdpbf16ps.
GGQ_BF16_TARGET inline void dot_buf_dp(const uint16_t* w, int rows, int64_t k, const uint16_t* x, int64_t T, float* y,
                                       int64_t ldy) {
  if (rows == 4) return dot_buf_dp_r<4>(w, k, x, T, y, ldy);
  for (int r = 0; r < rows; ++r) dot_buf_dp_r<1>(w + r * k, k, x, T, y + r, ldy);
}

#else
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[tt * ldy] = w . x[tt] for tt < NT: two 8-lane sums per row of x (16 values a step), fused
// multiply-adds (R: one weight row a pass; AVX2 has too few registers for more).
template <int R, int NT, typename W>
inline void dot_buf_nt(const W* w, int64_t k, const float* x, float* y, int64_t ldy) {
  static_assert(R == 1, "AVX2 dots one weight row a pass");
  __m256 a[NT], b[NT];
  for (int tt = 0; tt < NT; ++tt) a[tt] = b[tt] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __m256 w0 = load8(w + i), w1 = load8(w + i + 8);
    for (int tt = 0; tt < NT; ++tt) {
      a[tt] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + tt * k + i), a[tt]);
      b[tt] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + tt * k + i + 8), b[tt]);
    }
  }
  for (int tt = 0; tt < NT; ++tt) y[tt * ldy] = hsum(_mm256_add_ps(a[tt], b[tt]));
}
#endif

// Weight rows dotted per pass: AVX512 has the registers for two rows x four activation rows.
constexpr int kRowsPerPass = GGQ_ISA == 2 ? 2 : 1;

template <int R, typename W>
inline void dot_buf_r(const W* w, int64_t k, const float* x, int64_t T, float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; t += 4) {
    const float* xt = x + t * k;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, T - t)) {
      case 4: dot_buf_nt<R, 4>(w, k, xt, yt, ldy); break;
      case 3: dot_buf_nt<R, 3>(w, k, xt, yt, ldy); break;
      case 2: dot_buf_nt<R, 2>(w, k, xt, yt, ldy); break;
      default: dot_buf_nt<R, 1>(w, k, xt, yt, ldy); break;
    }
  }
}

// y[t * ldy + r] = w[r] . x[t] for r < rows (dequantized rows [rows, k]), t < T (x: float32 [T, k]).
template <typename W>
inline void dot_buf(const W* w, int rows, int64_t k, const float* x, int64_t T, float* y, int64_t ldy) {
  if (rows == kRowsPerPass) return dot_buf_r<kRowsPerPass>(w, k, x, T, y, ldy);
  for (int r = 0; r < rows; ++r) dot_buf_r<1>(w + r * k, k, x, T, y + r, ldy);
}

#endif
