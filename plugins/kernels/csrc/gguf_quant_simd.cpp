// Intrinsic dot loops, included by gguf_quant_kernels.cpp inside an ISA namespace (GGQ_ISA 1 = AVX2,
// 2 = AVX512 VNNI); compiled on its own it is empty.
//
// A sub-block of 32 weights is unpacked to 32 bytes (unsigned codes, or signed for Q8_0), dotted
// with the activation's 32 int8 with u8 x s8 multiply-adds (vpdpbusd with VNNI, vpmaddubsw +
// vpmaddwd on AVX2) into 8 int32 lanes (lanes 0-3: first 16 weights, 4-7: last 16), then scaled
// in float: acc += lanes * (dw[half] * xd). The code offset and the block min fold into one scalar
// per half: off[h] * xs[h], with xs = xd * (sum of the activation's int8 over that half).
#if defined(GGQ_ISA) && GGQ_ISA > 0

inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if GGQ_ISA == 2
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

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

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc[tt] (+ off[tt]) += sub-block `sb` (codes q, head h at j) dotted with activation row tt.
template <class Q, int NT, int NSUB>
inline void step256(__m256i q, const Head<NSUB>& h, int j, int64_t sb, int64_t k, const int8_t* xq, const float* xd,
                    const float* xs, __m256* acc, float* off) {
  const int64_t nb = k / 32;
  const __m256i uq = Q::kSigned ? _mm256_sign_epi8(q, q) : q;
  const __m256 dw = _mm256_set_m128(_mm_set1_ps(h.dw[j][1]), _mm_set1_ps(h.dw[j][0]));
  for (int tt = 0; tt < NT; ++tt) {
    __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + tt * k + sb * 32));
    if (Q::kSigned) x = _mm256_sign_epi8(x, q);
    const __m256 p = _mm256_cvtepi32_ps(dot_u8s8(uq, x));
    acc[tt] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, _mm256_set1_ps(xd[tt * nb + sb])), acc[tt]);
    if (!Q::kSigned) {
      const float* s = xs + (tt * nb + sb) * 2;
      off[tt] += h.off[j][0] * s[0] + h.off[j][1] * s[1];
    }
  }
}

#if GGQ_ISA == 2
// Two consecutive sub-blocks (sb, sb + 1) in one 512-bit pass: codes qa (head ha, ja) and qb (hb, jb).
template <class Q, int NT, int NSUB>
inline void step512(__m256i qa, __m256i qb, const Head<NSUB>& ha, int ja, const Head<NSUB>& hb, int jb, int64_t sb,
                    int64_t k, const int8_t* xq, const float* xd, const float* xs, __m512* acc, __m128* off) {
  const int64_t nb = k / 32;
  const __m512i q = _mm512_inserti64x4(_mm512_zextsi256_si512(qa), qb, 1);
  const __m512i uq = Q::kSigned ? _mm512_abs_epi8(q) : q;
  const __mmask64 neg = Q::kSigned ? _mm512_movepi8_mask(q) : 0;
  const __m512 dw = _mm512_insertf32x8(
      _mm512_zextps256_ps512(_mm256_set_m128(_mm_set1_ps(ha.dw[ja][1]), _mm_set1_ps(ha.dw[ja][0]))),
      _mm256_set_m128(_mm_set1_ps(hb.dw[jb][1]), _mm_set1_ps(hb.dw[jb][0])), 1);
  const __m128 o = _mm_setr_ps(ha.off[ja][0], ha.off[ja][1], hb.off[jb][0], hb.off[jb][1]);
  for (int tt = 0; tt < NT; ++tt) {
    __m512i x = _mm512_loadu_si512(xq + tt * k + sb * 32);
    if (Q::kSigned) x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), uq, x));
    const float* d = xd + tt * nb + sb;
    const __m512 dx = _mm512_insertf32x8(_mm512_set1_ps(d[0]), _mm256_set1_ps(d[1]), 1);
    acc[tt] = _mm512_fmadd_ps(p, _mm512_mul_ps(dw, dx), acc[tt]);
    if (!Q::kSigned) off[tt] = _mm_fmadd_ps(o, _mm_loadu_ps(xs + (tt * nb + sb) * 2), off[tt]);
  }
}

// Two 32-weight blocks a, b (Q4_0 .. Q8_0) in one 512-bit pass. Their scales (and mins) convert in
// one vcvtph2ps and spread with permutes: cheaper than two Head decodes at 1-2 ns per block.
template <class Q, int NT>
inline void step512_pair(const uint8_t* a, int64_t sb, int64_t k, const int8_t* xq, const float* xd, const float* xs,
                         __m512* acc, __m128* off) {
  const int64_t nb = k / 32;
  const uint8_t* b = a + Q::kBytes;
  uint32_t ha, hb;  // d (and m for the types with a min) of each block, as two halves
  std::memcpy(&ha, a, 4);
  std::memcpy(&hb, b, 4);
  const __m128 f = _mm_cvtph_ps(_mm_set_epi32(0, 0, static_cast<int>(hb), static_cast<int>(ha)));  // da ma db mb
  const __m512i spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
  const __m512 dw = _mm512_permutexvar_ps(spread, _mm512_zextps128_ps512(f));
  __m128 o = _mm_setzero_ps();
  if (Q::kMin) o = _mm_permute_ps(f, _MM_SHUFFLE(3, 3, 1, 1));
  if (!Q::kMin && Q::kZero != 0) {  // weight = d * (code - zero): offset -zero * d
    o = _mm_mul_ps(_mm_set1_ps(-static_cast<float>(Q::kZero)), _mm_permute_ps(f, _MM_SHUFFLE(2, 2, 0, 0)));
  }
  const __m512i q = _mm512_inserti64x4(_mm512_zextsi256_si512(Q::codes(a, 0)), Q::codes(b, 0), 1);
  const __m512i uq = Q::kSigned ? _mm512_abs_epi8(q) : q;
  const __mmask64 neg = Q::kSigned ? _mm512_movepi8_mask(q) : 0;
  const __m512i spread_x = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  for (int tt = 0; tt < NT; ++tt) {
    __m512i x = _mm512_loadu_si512(xq + tt * k + sb * 32);
    if (Q::kSigned) x = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
    const __m512 p = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), uq, x));
    const __m128 d2 = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(xd + tt * nb + sb)));
    const __m512 dx = _mm512_permutexvar_ps(spread_x, _mm512_zextps128_ps512(d2));
    acc[tt] = _mm512_fmadd_ps(p, _mm512_mul_ps(dw, dx), acc[tt]);
    if (!Q::kSigned) off[tt] = _mm_fmadd_ps(o, _mm_loadu_ps(xs + (tt * nb + sb) * 2), off[tt]);
  }
}

// One weight row against NT activation rows, two sub-blocks per step: y[tt * ldy] = dot(row, activation tt).
template <class Q, int NT>
inline void dot_row(const uint8_t* row, int64_t k, const int8_t* xq, const float* xd, const float* xs, float* y,
                    int64_t ldy) {
  __m512 acc[NT];
  __m128 off[NT];
  for (int tt = 0; tt < NT; ++tt) {
    acc[tt] = _mm512_setzero_ps();
    off[tt] = _mm_setzero_ps();
  }
  const int64_t nblocks = k / (32 * Q::kSub);
  Head<Q::kSub> h;
  int64_t b = 0;
  if constexpr (Q::kSub == 1) {
    for (; b + 1 < nblocks; b += 2) {
      step512_pair<Q, NT>(row + b * Q::kBytes, b, k, xq, xd, xs, acc, off);
    }
  } else {
    for (; b < nblocks; ++b) {
      const uint8_t* blk = row + b * Q::kBytes;
      Q::head(blk, h);
      for (int j = 0; j < Q::kSub; j += 2) {
        step512<Q, NT>(Q::codes(blk, j), Q::codes(blk, j + 1), h, j, h, j + 1, b * Q::kSub + j, k, xq, xd, xs, acc,
                       off);
      }
    }
  }
  float tail[NT] = {};
  if (b < nblocks) {  // an odd number of 32-weight blocks: the last one on its own
    __m256 acc256[NT];
    for (int tt = 0; tt < NT; ++tt) acc256[tt] = _mm256_setzero_ps();
    Q::head(row + b * Q::kBytes, h);
    step256<Q, NT>(Q::codes(row + b * Q::kBytes, 0), h, 0, b, k, xq, xd, xs, acc256, tail);
    for (int tt = 0; tt < NT; ++tt) tail[tt] += hsum(acc256[tt]);
  }
  for (int tt = 0; tt < NT; ++tt) {
    __m128 o = _mm_add_ps(off[tt], _mm_movehl_ps(off[tt], off[tt]));
    o = _mm_add_ss(o, _mm_movehdup_ps(o));
    y[tt * ldy] = _mm512_reduce_add_ps(acc[tt]) + _mm_cvtss_f32(o) + tail[tt];
  }
}
#else
// One weight row against NT activation rows: y[tt * ldy] = dot(row, activation tt).
template <class Q, int NT>
inline void dot_row(const uint8_t* row, int64_t k, const int8_t* xq, const float* xd, const float* xs, float* y,
                    int64_t ldy) {
  __m256 acc[NT];
  float off[NT];
  for (int tt = 0; tt < NT; ++tt) {
    acc[tt] = _mm256_setzero_ps();
    off[tt] = 0.f;
  }
  Head<Q::kSub> h;
  for (int64_t b = 0; b < k / (32 * Q::kSub); ++b) {
    const uint8_t* blk = row + b * Q::kBytes;
    Q::head(blk, h);
    for (int j = 0; j < Q::kSub; ++j) step256<Q, NT>(Q::codes(blk, j), h, j, b * Q::kSub + j, k, xq, xd, xs, acc, off);
  }
  for (int tt = 0; tt < NT; ++tt) y[tt * ldy] = hsum(acc[tt]) + off[tt];
}
#endif

template <class Q>
void dot_rows_t(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k, const int8_t* xq,
                const float* xd, const float* xs, int64_t T, float* y, int64_t ldy) {
  const int64_t nb = k / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * row_bytes;
    for (int64_t t = 0; t < T; t += 4) {
      const int8_t* q = xq + t * k;
      const float *d = xd + t * nb, *s = xs + t * nb * 2;
      float* out = y + t * ldy + n;
      switch (std::min<int64_t>(4, T - t)) {
        case 4: dot_row<Q, 4>(row, k, q, d, s, out, ldy); break;
        case 3: dot_row<Q, 3>(row, k, q, d, s, out, ldy); break;
        case 2: dot_row<Q, 2>(row, k, q, d, s, out, ldy); break;
        default: dot_row<Q, 1>(row, k, q, d, s, out, ldy); break;
      }
    }
  }
}

inline bool simd_dot_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                          const int8_t* xq, const float* xd, const float* xs, int64_t T, float* y, int64_t ldy) {
  switch (qtype) {
    case kQ4_0: dot_rows_t<TQ4_0>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ4_1: dot_rows_t<TQ4_1>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ5_0: dot_rows_t<TQ5_0>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ5_1: dot_rows_t<TQ5_1>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ8_0: dot_rows_t<TQ8_0>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ4_K: dot_rows_t<TQ4_K>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ5_K: dot_rows_t<TQ5_K>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    case kQ6_K: dot_rows_t<TQ6_K>(w, row_bytes, n0, n1, k, xq, xd, xs, T, y, ldy); return true;
    default: return false;
  }
}

// float -> bfloat16 bits, round to nearest even (as c10::BFloat16 for finite values).
inline __m128i to_bf16(__m256 f) {
  const __m256i b = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8));
}

inline void store8(float* out, __m256 v) { _mm256_storeu_ps(out, v); }
inline void store8(uint16_t* out, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), to_bf16(v)); }

// Rows of weights, each as gguf-py computes it: dw * float(code - zero), then + off for the types with a min.
template <class Q, typename Out>
void dequant_rows_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, Out* out) {
  Head<Q::kSub> h;
  alignas(32) uint8_t codes[32];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t b = 0; b < k / (32 * Q::kSub); ++b) {
      const uint8_t* blk = row + b * Q::kBytes;
      Q::head(blk, h);
      for (int j = 0; j < Q::kSub; ++j) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(codes), Q::codes(blk, j));
        Out* o = out + r * k + (b * Q::kSub + j) * 32;
        for (int part = 0; part < 4; ++part) {
          const __m128i c8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 8 * part));
          const __m256i c = Q::kSigned ? _mm256_cvtepi8_epi32(c8) : _mm256_cvtepu8_epi32(c8);
          const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(Q::kZero)));
          __m256 f = _mm256_mul_ps(_mm256_set1_ps(h.dw[j][part / 2]), v);
          if (Q::kMin) f = _mm256_add_ps(f, _mm256_set1_ps(h.off[j][part / 2]));
          store8(o + 8 * part, f);
        }
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

#endif
