// Intrinsic loops, included by gguf_quant_kernels.cpp inside an ISA namespace (GGQ_ISA 1 = AVX2,
// 2 = AVX512); compiled on its own it is empty.
//
// Dequantization: a sub-block of 32 weights is unpacked to 32 byte codes (unsigned, or signed for
// Q8_0) and written as dw[half] * float(code - zero) (+ off for the types with a min), the float
// operations of gguf-py, 8 at a time, as float32 or rounded to bfloat16.
// Decode dots (fused_rows, fused_dp_rows): R weight rows against NT <= 4 activation rows, each
// sub-block dequantized in registers (the same values, through a table of the sub-block's 16 or 32
// possible weights for the 4- and 5-bit types) and used for all NT rows; for larger T a pass's rows
// are dequantized once into the caller's buffer and read back instead. Each (weight row, activation
// row) pair has its own accumulators, so its sums run in the same order whatever T, R, NT or the
// path is, or how the rows are grouped.
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

// Every IEEE half as float, as half_to_float gives it (256 KiB, built on first use). The decode dots
// read the legacy types' scales from it: a load the multiply broadcasts from memory, where
// half_to_float costs an insert, a conversion and a register broadcast (port 5) per scale.
inline const float* half_table() {
  struct Table {
    alignas(64) float v[1 << 16];
    Table() {
      for (uint32_t i = 0; i < (1u << 16); ++i) v[i] = _cvtsh_ss(static_cast<unsigned short>(i));
    }
  };
  static const Table table;
  return table.v;
}

// The half at p as float, through f16 = half_table().
inline float half_lut(const float* f16, const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16[h];
}

// What one block decodes to for its sub-blocks: scales per half and offsets per half.
template <int NSUB>
struct Head {
  float dw[NSUB][2];
  float off[NSUB][2];
};

// Per type: kBytes, kSub, kSigned, kZero, kMin; head(b, h, f16) (f16: half_table()); codes(b, j).
struct TQ4_0 {
  static constexpr int kBytes = 18, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 8;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h, const float* f16) {
    const float d = half_lut(f16, b);
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
  static void head(const uint8_t* b, Head<1>& h, const float* f16) {
    h.dw[0][0] = h.dw[0][1] = half_lut(f16, b);
    h.off[0][0] = h.off[0][1] = half_lut(f16, b + 2);
  }
  static __m256i codes(const uint8_t* b, int) { return nibbles16(b + 4); }
};

struct TQ5_0 {
  static constexpr int kBytes = 22, kSub = 1;
  static constexpr bool kSigned = false;
  static constexpr int kZero = 16;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h, const float* f16) {
    const float d = half_lut(f16, b);
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
  static void head(const uint8_t* b, Head<1>& h, const float* f16) {
    h.dw[0][0] = h.dw[0][1] = half_lut(f16, b);
    h.off[0][0] = h.off[0][1] = half_lut(f16, b + 2);
  }
  static __m256i codes(const uint8_t* b, int) { return _mm256_or_si256(nibbles16(b + 8), bits_to_0x10(b + 4)); }
};

struct TQ8_0 {
  static constexpr int kBytes = 34, kSub = 1;
  static constexpr bool kSigned = true;
  static constexpr int kZero = 0;  // weight = dw * (code - kZero) (+ off with kMin)
  static constexpr bool kMin = false;
  static void head(const uint8_t* b, Head<1>& h, const float* f16) {
    h.dw[0][0] = h.dw[0][1] = half_lut(f16, b);
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
  static void head(const uint8_t* b, Head<8>& h, const float*) { k_head(b, h); }
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
  static void head(const uint8_t* b, Head<8>& h, const float*) { k_head(b, h); }
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
  static void head(const uint8_t* b, Head<8>& h, const float*) {
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

// The same rounding kept in float32 lanes: the value to_bf16 stores, widened back (low 16 bits cleared).
inline __m256 round_bf16(__m256 f) {
  const __m256i b = _mm256_castps_si256(f);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
  return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

inline void store8(float* out, __m256 v) { _mm256_storeu_ps(out, v); }
inline void store8(uint16_t* out, __m256 v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(out), to_bf16(v)); }

// 8 weights from the 8 codes in the low bytes of c8: dw * float(code - zero) (+ off), as gguf-py computes them.
template <class Q>
inline __m256 deq8(__m128i c8, float dw, float off) {
  const __m256i c = Q::kSigned ? _mm256_cvtepi8_epi32(c8) : _mm256_cvtepu8_epi32(c8);
  const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_set1_epi32(Q::kZero)));
  const __m256 f = _mm256_mul_ps(_mm256_set1_ps(dw), v);
  return Q::kMin ? _mm256_add_ps(f, _mm256_set1_ps(off)) : f;
}

#if GGQ_ISA == 2
inline void store16(float* out, __m512 v) { _mm512_storeu_ps(out, v); }
inline void store16(uint16_t* out, __m512 v) {  // round to nearest even, as to_bf16
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(r));
}

// The value store16 writes for bfloat16, widened back to float32 lanes (low 16 bits cleared).
inline __m512 round_bf16(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
  return _mm512_castsi512_ps(_mm512_and_si512(r, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// Weights 16 * half .. 16 * half + 15 of a sub-block (codes c, scale dw, offset off) as gguf-py computes them.
template <class Q>
inline __m512 deq16(__m256i c, int half, float dw, float off) {
  const __m128i c16 = half ? _mm256_extracti128_si256(c, 1) : _mm256_castsi256_si128(c);
  __m512i ci = Q::kSigned ? _mm512_cvtepi8_epi32(c16) : _mm512_cvtepu8_epi32(c16);
  if (Q::kZero != 0) ci = _mm512_sub_epi32(ci, _mm512_set1_epi32(Q::kZero));
  const __m512 f = _mm512_mul_ps(_mm512_set1_ps(dw), _mm512_cvtepi32_ps(ci));
  return Q::kMin ? _mm512_add_ps(f, _mm512_set1_ps(off)) : f;
}
#endif

// Rows of weights, each as gguf-py computes it: dw * float(code - zero), then + off for the types with a min.
template <class Q, typename Out>
void dequant_rows_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, Out* out) {
  Head<Q::kSub> h;
  const float* f16 = half_table();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t b = 0; b < k / (32 * Q::kSub); ++b) {
      const uint8_t* blk = row + b * Q::kBytes;
      Q::head(blk, h, f16);
      for (int j = 0; j < Q::kSub; ++j) {
        Out* o = out + r * k + (b * Q::kSub + j) * 32;
        const __m256i c = Q::codes(blk, j);
#if GGQ_ISA == 2
        store16(o, deq16<Q>(c, 0, h.dw[j][0], h.off[j][0]));
        store16(o + 16, deq16<Q>(c, 1, h.dw[j][1], h.off[j][1]));
#else
        const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
        store8(o, deq8<Q>(lo, h.dw[j][0], h.off[j][0]));
        store8(o + 8, deq8<Q>(_mm_srli_si128(lo, 8), h.dw[j][0], h.off[j][0]));
        store8(o + 16, deq8<Q>(hi, h.dw[j][1], h.off[j][1]));
        store8(o + 24, deq8<Q>(_mm_srli_si128(hi, 8), h.dw[j][1], h.off[j][1]));
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

// Decode dots. Each sub-block of R weight rows is dequantized in registers (exactly as dequant_rows
// computes it; rounded to bfloat16 as dequant_rows_bf16 stores it for W = uint16_t) and multiplied
// with NT rows of x at once. Each (row, activation row) pair has its own accumulators, fed in the
// same order whatever R, NT, T or the split of rows over threads is.
#if GGQ_ISA == 2
template <typename W>
inline __m512 as_weight(__m512 f) {
  if constexpr (std::is_same_v<W, uint16_t>) return round_bf16(f);
  return f;
}

// Table lookups for the types with one scale per sub-block and at most 32 codes: the sub-block's
// weights for every code (dw * float(code - zero) (+ off), the same arithmetic as deq16), rounded to
// bfloat16 once where needed, then picked per weight with vpermps / vpermt2ps (float32 lanes) or vpermw
// (bfloat16 words; index: the low 5 bits of each word). lut_bits<Q>: 4 (16 codes; vpermw's table holds
// them twice, so index bit 4 may be anything), 5, or 0 (no table: Q8_0, Q6_K).
template <class Q, class... Ts>
constexpr bool one_of = (std::is_same_v<Q, Ts> || ...);
template <class Q>
constexpr int lut_bits = one_of<Q, TQ4_0, TQ4_1, TQ4_K> ? 4 : one_of<Q, TQ5_0, TQ5_1, TQ5_K> ? 5 : 0;

// Q4_0 and Q4_1 in fused_dp_nt: their 32 word indices come in a permuted order of pairs, cheaper to
// make: one vpmultishiftqb (port 5; the natural order costs a vpmovzxbw, also port 5, and a shift on
// port 0, which the dot's vdpbf16ps keep busy) picks each word's nibble out of the 16 packed bytes
// broadcast to each 128-bit lane. Dword lane j of the result holds the pair (weights
// 2 * pair_order()[j], + 1), in their order within the dword, so the dot permutes x's dwords the same
// way and its sums back before adding their lanes: each lane sums the same products in the same order
// as in the natural order.
template <class Q>
constexpr bool kPairPermuted = one_of<Q, TQ4_0, TQ4_1>;

// Qword q of the broadcast bytes holds bytes 0-7 (q even) or 8-15 (q odd); its 4 words take the low
// nibbles (q < 4) or the high ones (q >= 4; weights 16 + ...) of bytes 4 (q / 2 % 2) .. + 3 of its half:
// pairs in dword order 0, 1, 4, 5, 2, 3, 6, 7, then the same + 8. The order is its own inverse.
inline __m512i pair_order() { return _mm512_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15); }
inline __m512i pair_unorder() { return pair_order(); }

// 16 packed bytes -> 32 word indices (low 4 bits; bits 4-15 are other nibbles' bits) in pair_order: each
// word's low byte is the 8 bits from its nibble's first bit within its qword (vpmultishiftqb wraps around
// at the qword's end, so the last nibble's window holds bits 60-63, then 0-3).
GGQ_BF16_TARGET inline __m512i nibble_words(const uint8_t* p) {
  const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  // per qword: 4 words at bit 32 (q / 2 % 2) + 4 (q >= 4) + 8 m, m = 0 .. 3 (both bytes of a word alike)
  const __m512i shifts = _mm512_setr_epi64(0x1818101008080000LL, 0x1818101008080000LL, 0x3838303028282020LL,
                                           0x3838303028282020LL, 0x1c1c14140c0c0404LL, 0x1c1c14140c0c0404LL,
                                           0x3c3c34342c2c2424LL, 0x3c3c34342c2c2424LL);
  return _mm512_multishift_epi64_epi8(shifts, v);
}

// The table index of each of the 32 weights of sub-block j of the block at b.
template <class Q>
GGQ_BF16_TARGET inline __m512i lut_index(const uint8_t* b, int j) {
  if constexpr (std::is_same_v<Q, TQ4_0>) {
    return nibble_words(b + 2);
  } else if constexpr (std::is_same_v<Q, TQ4_1>) {
    return nibble_words(b + 4);
  } else if constexpr (std::is_same_v<Q, TQ4_K>) {
    const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * (j / 2))));
    return j % 2 ? _mm512_srli_epi16(v, 4) : v;
  } else {
    return _mm512_cvtepu8_epi16(Q::codes(b, j));
  }
}

// Table entries for codes base .. base + 15: dw * float(code - zero) (+ off).
template <class Q>
inline __m512 lut_entries(float dw, float off, float base) {
  const __m512 code = _mm512_add_ps(_mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                    _mm512_set1_ps(base));
  const __m512 f = _mm512_mul_ps(_mm512_set1_ps(dw), _mm512_sub_ps(code, _mm512_set1_ps(Q::kZero)));
  return Q::kMin ? _mm512_add_ps(f, _mm512_set1_ps(off)) : f;
}

// The 32 weights of sub-block j of the block at b (head h) as as_weight<W> of deq16 gives them: halves w0, w1.
template <class Q, typename W>
inline void sub_weights(const uint8_t* b, int j, const Head<Q::kSub>& h, __m512& w0, __m512& w1) {
  const __m256i c = Q::codes(b, j);
  if constexpr (lut_bits<Q> != 0) {
    const __m512 t0 = as_weight<W>(lut_entries<Q>(h.dw[j][0], h.off[j][0], 0.f));
    const __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(c));
    const __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(c, 1));
    if constexpr (lut_bits<Q> == 4) {
      w0 = _mm512_permutexvar_ps(i0, t0);
      w1 = _mm512_permutexvar_ps(i1, t0);
    } else {
      const __m512 t1 = as_weight<W>(lut_entries<Q>(h.dw[j][0], h.off[j][0], 16.f));
      w0 = _mm512_permutex2var_ps(t0, i0, t1);
      w1 = _mm512_permutex2var_ps(t0, i1, t1);
    }
  } else {
    w0 = as_weight<W>(deq16<Q>(c, 0, h.dw[j][0], h.off[j][0]));
    w1 = as_weight<W>(deq16<Q>(c, 1, h.dw[j][1], h.off[j][1]));
  }
}

// Widened 16 weights of a buffer dequant_rows_t filled: float32 as stored, bfloat16 bits shifted up.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// y[tt * ldy + r] = row r . x[tt] for r < R weight rows (stride row_bytes), tt < NT: two 16-lane sums
// per (r, tt), 32 values a step (half 0 of each sub-block into a, half 1 into b), fused multiply-adds.
// kBuf: the rows come dequantized in buf [R, k] (as dequant_rows_t<Q, W> gives them) instead of w.
template <class Q, typename W, int R, int NT, bool kBuf>
inline void fused_nt(const uint8_t* w, int64_t row_bytes, const W* buf, int64_t k, const float* x, float* y,
                     int64_t ldy) {
  __m512 a[R][NT], b[R][NT];
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) a[r][tt] = b[r][tt] = _mm512_setzero_ps();
  }
  Head<Q::kSub> h[R];
  const float* f16 = half_table();
  for (int64_t blk = 0; blk < k / (32 * Q::kSub); ++blk) {
    const uint8_t* bp = w + blk * Q::kBytes;
    if constexpr (!kBuf) {
      for (int r = 0; r < R; ++r) Q::head(bp + r * row_bytes, h[r], f16);
    }
    for (int j = 0; j < Q::kSub; ++j) {
      const int64_t i = (blk * Q::kSub + j) * 32;
      __m512 w0[R], w1[R];
      for (int r = 0; r < R; ++r) {
        if constexpr (kBuf) {
          w0[r] = load16(buf + r * k + i);
          w1[r] = load16(buf + r * k + i + 16);
        } else {
          sub_weights<Q, W>(bp + r * row_bytes, j, h[r], w0[r], w1[r]);
        }
      }
      for (int tt = 0; tt < NT; ++tt) {
        const __m512 x0 = _mm512_loadu_ps(x + tt * k + i), x1 = _mm512_loadu_ps(x + tt * k + i + 16);
        for (int r = 0; r < R; ++r) {
          a[r][tt] = _mm512_fmadd_ps(w0[r], x0, a[r][tt]);
          b[r][tt] = _mm512_fmadd_ps(w1[r], x1, b[r][tt]);
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) y[tt * ldy + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r][tt], b[r][tt]));
  }
}

// The 32 bfloat16 weights of sub-block j of the block at b (scale dw, offset off: the same for both halves).
template <class Q>
GGQ_BF16_TARGET inline __m512bh lut_weights(const uint8_t* b, int j, float dw, float off) {
  const __m512 t0 = lut_entries<Q>(dw, off, 0.f);
  const __m512 t1 = lut_bits<Q> == 5 ? lut_entries<Q>(dw, off, 16.f) : t0;
  const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(t1, t0);
  return (__m512bh)_mm512_permutexvar_epi16(lut_index<Q>(b, j), table);
}

// lut_weights for two rows of Q4_0 / Q4_1 (blocks b0, b1; heads h0, h1) with one conversion: row 0's
// table in words 0-15, row 1's in 16-31, picked by index bit 4.
template <class Q>
GGQ_BF16_TARGET inline void lut_weights2(const uint8_t* b0, const uint8_t* b1, int j, float d0, float o0, float d1,
                                         float o1, __m512bh& w0, __m512bh& w1) {
  const __m512 t0 = lut_entries<Q>(d0, o0, 0.f), t1 = lut_entries<Q>(d1, o1, 0.f);
  const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(t1, t0);
  const __m512i low4 = _mm512_set1_epi16(0x0f), bit4 = _mm512_set1_epi16(0x10);
  w0 = (__m512bh)_mm512_permutexvar_epi16(_mm512_and_si512(lut_index<Q>(b0, j), low4), table);
  // (index & low4) | bit4
  w1 = (__m512bh)_mm512_permutexvar_epi16(_mm512_ternarylogic_epi32(lut_index<Q>(b1, j), low4, bit4, 0xea), table);
}

// The bfloat16 weights against bfloat16 activations with vdpbf16ps: one 16-lane sum per (r, tt), 32
// products a step (bfloat16 products are exact in float32, as in the GEMM path's bf16 kernel). The
// weights are rounded by vcvtne2ps2bf16: round to nearest even, as store16 (the weights are finite
// and never float32-subnormal: multiples of 2^-24).
// kXPerm: x comes with its dwords already in pair_order (see permute_pairs), for weights in pair_order.
template <class Q, int R, int NT, bool kBuf, bool kXPerm = false>
GGQ_BF16_TARGET inline void fused_dp_nt(const uint8_t* w, int64_t row_bytes, const uint16_t* buf, int64_t k,
                                        const uint16_t* x, float* y, int64_t ldy) {
  constexpr bool kPerm = !kBuf && kPairPermuted<Q>;  // the weights come in pair_order
  static_assert(!kXPerm || kPerm, "x in pair_order only for weights in pair_order");
  __m512 a[R][NT];
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) a[r][tt] = _mm512_setzero_ps();
  }
  Head<Q::kSub> h[R];
  const float* f16 = half_table();
  for (int64_t blk = 0; blk < k / (32 * Q::kSub); ++blk) {
    const uint8_t* bp = w + blk * Q::kBytes;
    if constexpr (!kBuf) {
      for (int r = 0; r < R; ++r) Q::head(bp + r * row_bytes, h[r], f16);
    }
    for (int j = 0; j < Q::kSub; ++j) {
      const int64_t i = (blk * Q::kSub + j) * 32;
      __m512bh wv[R];
      for (int r = 0; r < R; ++r) {
        if constexpr (kBuf) {
          wv[r] = (__m512bh)_mm512_loadu_si512(buf + r * k + i);
        } else if constexpr (kPairPermuted<Q> && R % 2 == 0) {
          if (r % 2 == 0) {
            lut_weights2<Q>(bp + r * row_bytes, bp + (r + 1) * row_bytes, j, h[r].dw[j][0], h[r].off[j][0],
                            h[r + 1].dw[j][0], h[r + 1].off[j][0], wv[r], wv[r + 1]);
          }
        } else if constexpr (lut_bits<Q> != 0) {
          wv[r] = lut_weights<Q>(bp + r * row_bytes, j, h[r].dw[j][0], h[r].off[j][0]);
        } else {
          const __m256i c = Q::codes(bp + r * row_bytes, j);
          wv[r] = _mm512_cvtne2ps_pbh(deq16<Q>(c, 1, h[r].dw[j][1], h[r].off[j][1]),
                                      deq16<Q>(c, 0, h[r].dw[j][0], h[r].off[j][0]));
        }
      }
      for (int tt = 0; tt < NT; ++tt) {
        __m512i xv = _mm512_loadu_si512(x + tt * k + i);
        if constexpr (kPerm && !kXPerm) xv = _mm512_permutexvar_epi32(pair_order(), xv);
        for (int r = 0; r < R; ++r) a[r][tt] = _mm512_dpbf16_ps(a[r][tt], wv[r], (__m512bh)xv);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) {
      const __m512 sum = kPerm ? _mm512_permutexvar_ps(pair_unorder(), a[r][tt]) : a[r][tt];
      y[tt * ldy + r] = _mm512_reduce_add_ps(sum);
    }
  }
}

// Weight rows per pass: at T = 1 (NT = 1), and for T > 1.
constexpr int kRowsT1 = 4, kRows = 2, kRowsDp = 4;
// Above this T a pass's rows are dequantized once into the buffer rather than once per 4 rows of x
// (measured: the table types gain from registers up to T = 8, Q8_0 and Q6_K up to 4).
template <class Q>
constexpr int64_t kMaxFusedT = lut_bits<Q> != 0 ? 8 : 4;

#else
template <typename W>
inline __m256 as_weight(__m256 f) {
  if constexpr (std::is_same_v<W, uint16_t>) return round_bf16(f);
  return f;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// y[tt * ldy + r] = row r . x[tt] for r < R, tt < NT: two 8-lane sums per (r, tt), 16 values a step
// (weights 0-7 of each 16 into a, 8-15 into b), fused multiply-adds. kBuf: the rows come dequantized
// in buf [R, k] instead of w.
template <class Q, typename W, int R, int NT, bool kBuf>
inline void fused_nt(const uint8_t* w, int64_t row_bytes, const W* buf, int64_t k, const float* x, float* y,
                     int64_t ldy) {
  __m256 a[R][NT], b[R][NT];
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) a[r][tt] = b[r][tt] = _mm256_setzero_ps();
  }
  Head<Q::kSub> h[R];
  const float* f16 = half_table();
  for (int64_t blk = 0; blk < k / (32 * Q::kSub); ++blk) {
    const uint8_t* bp = w + blk * Q::kBytes;
    if constexpr (!kBuf) {
      for (int r = 0; r < R; ++r) Q::head(bp + r * row_bytes, h[r], f16);
    }
    for (int j = 0; j < Q::kSub; ++j) {
      __m128i c[R][2];
      for (int r = 0; r < R && !kBuf; ++r) {
        const __m256i cr = Q::codes(bp + r * row_bytes, j);
        c[r][0] = _mm256_castsi256_si128(cr);
        c[r][1] = _mm256_extracti128_si256(cr, 1);
      }
      for (int half = 0; half < 2; ++half) {  // one step: 16 weights, scale dw[j][half]
        const int64_t i = (blk * Q::kSub + j) * 32 + 16 * half;
        __m256 w0[R], w1[R];
        for (int r = 0; r < R; ++r) {
          if constexpr (kBuf) {
            w0[r] = load8(buf + r * k + i);
            w1[r] = load8(buf + r * k + i + 8);
          } else {
            const float dw = h[r].dw[j][half], off = h[r].off[j][half];
            w0[r] = as_weight<W>(deq8<Q>(c[r][half], dw, off));
            w1[r] = as_weight<W>(deq8<Q>(_mm_srli_si128(c[r][half], 8), dw, off));
          }
        }
        for (int tt = 0; tt < NT; ++tt) {
          const __m256 x0 = _mm256_loadu_ps(x + tt * k + i), x1 = _mm256_loadu_ps(x + tt * k + i + 8);
          for (int r = 0; r < R; ++r) {
            a[r][tt] = _mm256_fmadd_ps(w0[r], x0, a[r][tt]);
            b[r][tt] = _mm256_fmadd_ps(w1[r], x1, b[r][tt]);
          }
        }
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int tt = 0; tt < NT; ++tt) y[tt * ldy + r] = hsum(_mm256_add_ps(a[r][tt], b[r][tt]));
  }
}

// Weight rows per pass: at T = 1 (NT = 1), and for T > 1 (AVX2 has 16 registers).
constexpr int kRowsT1 = 2, kRows = 1;
template <class Q>
constexpr int64_t kMaxFusedT = 4;  // above: a pass's rows are dequantized once into the buffer
#endif

// Asks for rows [n, n + rows) of w (clipped to n1) ahead of their pass: a pass walks its rows side by
// side, which the hardware prefetchers follow poorly once the weights come from memory (the LM head).
inline void prefetch_rows(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t rows, int64_t n1) {
  const uint8_t* p = w + n * row_bytes;
  const int64_t bytes = std::min(rows, n1 - n) * row_bytes;
  for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

// Rows [0, R) of w (or of buf: see fused_nt) against all T rows of x, NT <= 4 at a time.
template <class Q, typename W, int R, bool kBuf>
inline void fused_pass(const uint8_t* w, int64_t row_bytes, const W* buf, int64_t k, const float* x, int64_t T,
                       float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; t += 4) {
    const float* xt = x + t * k;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, T - t)) {
      case 4: fused_nt<Q, W, R, 4, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      case 3: fused_nt<Q, W, R, 3, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      case 2: fused_nt<Q, W, R, 2, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      default: fused_nt<Q, W, R, 1, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
    }
  }
}

// Rows [n, n + R) of w against all T rows of x: dequantized in registers for every NT <= 4 rows of x
// (T <= kMaxFusedT<Q>), or once into buf for all of them (the same weights, the same sums).
template <class Q, typename W, int R>
inline void rows_pass(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t n1, int64_t k, const float* x,
                      int64_t T, float* y, int64_t ldy, W* buf) {
  if (T > kMaxFusedT<Q>) {
    dequant_rows_t<Q>(w + n * row_bytes, row_bytes, R, k, buf);
    return fused_pass<Q, W, R, true>(nullptr, row_bytes, buf, k, x, T, y + n, ldy);
  }
  prefetch_rows(w, row_bytes, n + R, R, n1);
  fused_pass<Q, W, R, false>(w + n * row_bytes, row_bytes, buf, k, x, T, y + n, ldy);
}

#if GGQ_ISA == 2
// 4 < NT = T <= 8 (speculative verify steps): one weight row per pass against all rows of x (2 * NT <= 16
// accumulators), so each sub-block is dequantized once in registers, rather than once per 4 rows of x
// or through the buffer; the same sums in the same order.
template <class Q, typename W, int NT>
void fused_rows_one_pass(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k, const float* x,
                         float* y, int64_t ldy) {
  for (int64_t n = n0; n < n1; ++n) {
    prefetch_rows(w, row_bytes, n + 1, 1, n1);
    fused_nt<Q, W, 1, NT, false>(w + n * row_bytes, row_bytes, nullptr, k, x, y + n, ldy);
  }
}
#endif

// y[t * ldy + n] = row n . x[t] for n in [n0, n1), t < T (W: float for float32 weights, uint16_t for
// bfloat16-rounded ones; x float32 [T, k]; buf: W [kRows, k], the calling thread's scratch).
template <class Q, typename W>
void fused_rows(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k, const float* x, int64_t T,
                float* y, int64_t ldy, W* buf) {
#if GGQ_ISA == 2
  switch (T) {
    case 5: return fused_rows_one_pass<Q, W, 5>(w, row_bytes, n0, n1, k, x, y, ldy);
    case 6: return fused_rows_one_pass<Q, W, 6>(w, row_bytes, n0, n1, k, x, y, ldy);
    case 7: return fused_rows_one_pass<Q, W, 7>(w, row_bytes, n0, n1, k, x, y, ldy);
    case 8: return fused_rows_one_pass<Q, W, 8>(w, row_bytes, n0, n1, k, x, y, ldy);
    default: break;
  }
#endif
  int64_t n = n0;
  if (T == 1) {
    for (; n + kRowsT1 <= n1; n += kRowsT1) {
      prefetch_rows(w, row_bytes, n + kRowsT1, kRowsT1, n1);
      fused_nt<Q, W, kRowsT1, 1, false>(w + n * row_bytes, row_bytes, buf, k, x, y + n, ldy);
    }
  } else {
    for (; n + kRows <= n1; n += kRows) rows_pass<Q, W, kRows>(w, row_bytes, n, n1, k, x, T, y, ldy, buf);
  }
  for (; n < n1; ++n) rows_pass<Q, W, 1>(w, row_bytes, n, n1, k, x, T, y, ldy, buf);
}

template <typename W>
inline bool simd_dot_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                          const float* x, int64_t T, float* y, int64_t ldy, W* buf) {
  switch (qtype) {
    case kQ4_0: fused_rows<TQ4_0, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ4_1: fused_rows<TQ4_1, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ5_0: fused_rows<TQ5_0, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ5_1: fused_rows<TQ5_1, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ8_0: fused_rows<TQ8_0, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ4_K: fused_rows<TQ4_K, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ5_K: fused_rows<TQ5_K, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    case kQ6_K: fused_rows<TQ6_K, W>(w, row_bytes, n0, n1, k, x, T, y, ldy, buf); return true;
    default: return false;
  }
}

#if GGQ_ISA == 2
// Rows [0, R) of w (or of buf) against all T rows of xb (bfloat16 [T, k]), NT <= 4 at a time, with vdpbf16ps.
template <class Q, int R, bool kBuf>
GGQ_BF16_TARGET inline void fused_dp_pass(const uint8_t* w, int64_t row_bytes, const uint16_t* buf, int64_t k,
                                          const uint16_t* xb, int64_t T, float* y, int64_t ldy) {
  for (int64_t t = 0; t < T; t += 4) {
    const uint16_t* xt = xb + t * k;
    float* yt = y + t * ldy;
    switch (std::min<int64_t>(4, T - t)) {
      case 4: fused_dp_nt<Q, R, 4, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      case 3: fused_dp_nt<Q, R, 3, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      case 2: fused_dp_nt<Q, R, 2, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
      default: fused_dp_nt<Q, R, 1, kBuf>(w, row_bytes, buf, k, xt, yt, ldy); break;
    }
  }
}

// rows_pass with vdpbf16ps.
template <class Q, int R>
GGQ_BF16_TARGET inline void dp_rows_pass(const uint8_t* w, int64_t row_bytes, int64_t n, int64_t n1, int64_t k,
                                         const uint16_t* xb, int64_t T, float* y, int64_t ldy, uint16_t* buf) {
  if (T > kMaxFusedT<Q>) {
    dequant_rows_t<Q>(w + n * row_bytes, row_bytes, R, k, buf);
    return fused_dp_pass<Q, R, true>(nullptr, row_bytes, buf, k, xb, T, y + n, ldy);
  }
  prefetch_rows(w, row_bytes, n + R, R, n1);
  fused_dp_pass<Q, R, false>(w + n * row_bytes, row_bytes, buf, k, xb, T, y + n, ldy);
}

// A growing per-thread scratch. malloc (declared through immintrin.h), not std::vector: no std template
// is instantiated under this file's target pragma, where the linker could keep its AVX512 copy for the
// baseline build.
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  ~Scratch() { std::free(p); }
  template <typename E>
  E* get(int64_t n) {
    const size_t want = static_cast<size_t>(n) * sizeof(E);
    if (want > bytes) {
      std::free(p);
      p = std::malloc(want);
      bytes = p != nullptr ? want : 0;
    }
    return static_cast<E*>(p);
  }
};

// x (bfloat16 [n], n a multiple of 32) with the dwords of every 32 words in pair_order, as fused_dp_nt
// permutes them for Q4_0 / Q4_1: done once per call instead of once per pass.
inline void permute_pairs(const uint16_t* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 32) {
    const __m512i v = _mm512_loadu_si512(x + i);
    _mm512_storeu_si512(out + i, _mm512_permutexvar_epi32(pair_order(), v));
  }
}

// Rows [n0, n1) of w against NT rows of x in one pass per R weight rows (kXPerm: see fused_dp_nt).
template <class Q, int R, int NT, bool kXPerm>
GGQ_BF16_TARGET void fused_dp_rows_nt(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                                      const uint16_t* x, float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + R <= n1; n += R) {
    prefetch_rows(w, row_bytes, n + R, R, n1);
    fused_dp_nt<Q, R, NT, false, kXPerm>(w + n * row_bytes, row_bytes, nullptr, k, x, y + n, ldy);
  }
  for (; n < n1; ++n) {
    prefetch_rows(w, row_bytes, n + 1, 1, n1);
    fused_dp_nt<Q, 1, NT, false, kXPerm>(w + n * row_bytes, row_bytes, nullptr, k, x, y + n, ldy);
  }
}

// NT = T <= 8 (decode, speculative verify steps): one pass over all rows of x per R weight rows, so each
// sub-block is dequantized once (R * NT <= 16 accumulators), rather than once per 4 rows of x or
// through the buffer, and x is put in pair_order once per call; the same sums in the same order.
template <class Q, int NT>
GGQ_BF16_TARGET void fused_dp_rows_one_pass(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                                            const uint16_t* xb, float* y, int64_t ldy) {
  constexpr int R = NT <= 4 ? kRowsDp : 2;
  if constexpr (kPairPermuted<Q>) {
    thread_local Scratch scratch;
    if (uint16_t* xp = scratch.get<uint16_t>(NT * k)) {
      permute_pairs(xb, NT * k, xp);
      return fused_dp_rows_nt<Q, R, NT, true>(w, row_bytes, n0, n1, k, xp, y, ldy);
    }
  }
  fused_dp_rows_nt<Q, R, NT, false>(w, row_bytes, n0, n1, k, xb, y, ldy);
}

// fused_rows with vdpbf16ps on the bfloat16 activations xb [T, k].
template <class Q>
GGQ_BF16_TARGET void fused_dp_rows(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                                   const uint16_t* xb, int64_t T, float* y, int64_t ldy, uint16_t* buf) {
  switch (T) {
    case 1: return fused_dp_rows_one_pass<Q, 1>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 2: return fused_dp_rows_one_pass<Q, 2>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 3: return fused_dp_rows_one_pass<Q, 3>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 4: return fused_dp_rows_one_pass<Q, 4>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 5: return fused_dp_rows_one_pass<Q, 5>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 6: return fused_dp_rows_one_pass<Q, 6>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 7: return fused_dp_rows_one_pass<Q, 7>(w, row_bytes, n0, n1, k, xb, y, ldy);
    case 8: return fused_dp_rows_one_pass<Q, 8>(w, row_bytes, n0, n1, k, xb, y, ldy);
    default: break;
  }
  int64_t n = n0;
  for (; n + kRowsDp <= n1; n += kRowsDp) dp_rows_pass<Q, kRowsDp>(w, row_bytes, n, n1, k, xb, T, y, ldy, buf);
  for (; n < n1; ++n) dp_rows_pass<Q, 1>(w, row_bytes, n, n1, k, xb, T, y, ldy, buf);
}

GGQ_BF16_TARGET inline bool simd_dot_rows_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1,
                                             int64_t k, const uint16_t* xb, int64_t T, float* y, int64_t ldy,
                                             uint16_t* buf) {
  switch (qtype) {
    case kQ4_0: fused_dp_rows<TQ4_0>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ4_1: fused_dp_rows<TQ4_1>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ5_0: fused_dp_rows<TQ5_0>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ5_1: fused_dp_rows<TQ5_1>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ8_0: fused_dp_rows<TQ8_0>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ4_K: fused_dp_rows<TQ4_K>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ5_K: fused_dp_rows<TQ5_K>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    case kQ6_K: fused_dp_rows<TQ6_K>(w, row_bytes, n0, n1, k, xb, T, y, ldy, buf); return true;
    default: return false;
  }
}

// dequant_rows_t<Q, uint16_t> on CPUs with AVX512-BF16 for the AMX path: the same bfloat16 weights
// (the same float operations, rounded to nearest even by vcvtne2ps2bf16 instead of by integer adds),
// 32 per step: for the table types through the sub-block's table (as lut_weights), else both halves
// dequantized and converted in one instruction. In the tile order: Q4_0 / Q4_1's pairs of each 32 in
// pair_order (as the decode dots and the few-token tiles have them; the B tiles match), the rest natural.
template <class Q>
GGQ_BF16_TARGET inline void dequant_rows_bf16_dp_t(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k,
                                                   uint16_t* out) {
  Head<Q::kSub> h;
  const float* f16 = half_table();
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = w + r * row_bytes;
    for (int64_t b = 0; b < k / (32 * Q::kSub); ++b) {
      const uint8_t* blk = row + b * Q::kBytes;
      Q::head(blk, h, f16);
      for (int j = 0; j < Q::kSub; ++j) {
        __m512i v;
        if constexpr (lut_bits<Q> != 0) {
          const __m512 t0 = lut_entries<Q>(h.dw[j][0], h.off[j][0], 0.f);
          const __m512 t1 = lut_bits<Q> == 5 ? lut_entries<Q>(h.dw[j][0], h.off[j][0], 16.f) : t0;
          v = _mm512_permutexvar_epi16(lut_index<Q>(blk, j), (__m512i)_mm512_cvtne2ps_pbh(t1, t0));
        } else {
          const __m256i c = Q::codes(blk, j);
          v = (__m512i)_mm512_cvtne2ps_pbh(deq16<Q>(c, 1, h.dw[j][1], h.off[j][1]), deq16<Q>(c, 0, h.dw[j][0], h.off[j][0]));
        }
        _mm512_storeu_si512(out + r * k + (b * Q::kSub + j) * 32, v);
      }
    }
  }
}

GGQ_BF16_TARGET inline bool simd_dequant_rows_bf16_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows,
                                                      int64_t k, uint16_t* out) {
  switch (qtype) {
    case kQ4_0: dequant_rows_bf16_dp_t<TQ4_0>(w, row_bytes, rows, k, out); return true;
    case kQ4_1: dequant_rows_bf16_dp_t<TQ4_1>(w, row_bytes, rows, k, out); return true;
    case kQ5_0: dequant_rows_bf16_dp_t<TQ5_0>(w, row_bytes, rows, k, out); return true;
    case kQ5_1: dequant_rows_bf16_dp_t<TQ5_1>(w, row_bytes, rows, k, out); return true;
    case kQ8_0: dequant_rows_bf16_dp_t<TQ8_0>(w, row_bytes, rows, k, out); return true;
    case kQ4_K: dequant_rows_bf16_dp_t<TQ4_K>(w, row_bytes, rows, k, out); return true;
    case kQ5_K: dequant_rows_bf16_dp_t<TQ5_K>(w, row_bytes, rows, k, out); return true;
    case kQ6_K: dequant_rows_bf16_dp_t<TQ6_K>(w, row_bytes, rows, k, out); return true;
    default: return false;
  }
}

#ifdef GGQ_AMX_TARGET
// The tile unit for few rows of x (decode, speculative verify and small batched steps, T <= 16; the
// many-token path is gguf_quant_amx.cpp). Roles as there (C += A B): A = 16 weight rows x 32
// weights, B = 16 pairs of K x T tokens, C = 16 weight rows x T tokens in float32. Here each
// sub-block of a pass's 32 weight rows is built in registers as the decode dots build it and stored
// to a 2 KiB panel in L1, one sub-block ahead of the tiles that read it (two panels, used in turn),
// so the vector units build while the tile unit multiplies, and no pass's rows are dequantized whole
// into a buffer that spills to L2. A pass prefetches the next pass's rows (one contiguous run of
// bytes) a share per sub-block. The weights' words, their order within each 32 (Q4_0 / Q4_1 in
// pair_order, x packed to match) and the order C sums the sub-blocks in are the many-token path's,
// so an output element is the same bits in both paths and whatever T is (tests/plugins/kernels/
// test_gguf_amx.py). Measured (1 thread, us, Q4_1 1536 x 576; row path / this): T = 1 67 / 76,
// T = 5 174 / 83, T = 16 (2 threads) many-token path at T = 17 90 / this 52.
constexpr int64_t kAmxFewT = 16;
constexpr auto kFewHint = _MM_HINT_T0;

// Palette 1: C tiles 0-1 (16 rows x T floats), A tiles 4-5 (16 rows x 32 words), B tile 6 (16 pair
// rows x T dwords, read from amx::pack_x's layout for the first 16 tokens).
struct alignas(64) AmxFewConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  explicit AmxFewConfig(int64_t t) {
    for (int i : {0, 1, 6}) colsb[i] = static_cast<uint16_t>(4 * t);
    colsb[4] = colsb[5] = 64;
    for (int i : {0, 1, 4, 5, 6}) rows[i] = 16;
  }
};

// The 32 bfloat16 weights of sub-block j of the block at b in the tile order: the decode dots' words.
template <class Q>
GGQ_BF16_TARGET inline __m512i tile_weights(const uint8_t* b, int j, const Head<Q::kSub>& h) {
  if constexpr (lut_bits<Q> != 0) {
    return (__m512i)lut_weights<Q>(b, j, h.dw[j][0], h.off[j][0]);
  } else {
    const __m256i c = Q::codes(b, j);
    return (__m512i)_mm512_cvtne2ps_pbh(deq16<Q>(c, 1, h.dw[j][1], h.off[j][1]), deq16<Q>(c, 0, h.dw[j][0], h.off[j][0]));
  }
}

// The legacy types' block heads of `rows` (<= 32) rows from the block at b: scales into dv, offsets
// (the min, or -zero * scale) into ov, the values Q::head gives. Each row's first 4 bytes are copied
// to a small array, then converted 16 rows at a time (vcvtph2ps), not one table load per half.
template <class Q>
GGQ_BF16_TARGET inline void legacy_heads(const uint8_t* b, int64_t row_bytes, int rows, float* dv, float* ov) {
  alignas(64) uint32_t raw[32] = {};
  for (int r = 0; r < rows; ++r) std::memcpy(&raw[r], b + r * row_bytes, 4);
  for (int g = 0; g * 16 < rows; ++g) {
    const __m512i v = _mm512_load_si512(raw + 16 * g);
    const __m512 d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v));
    _mm512_store_ps(dv + 16 * g, d);
    if constexpr (Q::kMin) {
      _mm512_store_ps(ov + 16 * g, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16))));
    } else {
      _mm512_store_ps(ov + 16 * g, _mm512_mul_ps(_mm512_set1_ps(-static_cast<float>(Q::kZero)), d));
    }
  }
}

// tile_weights for a legacy type (one sub-block) from its scale and offset.
template <class Q>
GGQ_BF16_TARGET inline __m512i tile_weights1(const uint8_t* b, float d, float o) {
  if constexpr (lut_bits<Q> != 0) {
    return (__m512i)lut_weights<Q>(b, 0, d, o);
  } else {
    const __m256i c = Q::codes(b, 0);
    return (__m512i)_mm512_cvtne2ps_pbh(deq16<Q>(c, 1, d, o), deq16<Q>(c, 0, d, o));
  }
}

// 16 C sums per token (c: [16][T] floats, rows < nv valid) rounded to bfloat16 (+ bias, rounded
// again, as the row path adds it) into y[t * ldy + m].
GGQ_BF16_TARGET inline void amx_few_store(const float* c, int64_t T, const uint16_t* bias, int64_t nv, uint16_t* y,
                                          int64_t ldy) {
  const __mmask16 mask = static_cast<__mmask16>((1u << nv) - 1);
  __m512 bv = _mm512_setzero_ps();
  if (bias != nullptr) {
    bv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, bias)), 16));
  }
  const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                         _mm512_set1_epi32(static_cast<int>(T)));
  for (int64_t t = 0; t < T; ++t) {
    __m512 v = T == 1 ? _mm512_loadu_ps(c) : _mm512_i32gather_ps(idx, c + t, 4);
    if (bias != nullptr) v = _mm512_add_ps(round_bf16(v), bv);
    const __m512i b = _mm512_castps_si512(round_bf16(v));
    _mm256_mask_storeu_epi16(y + t * ldy, mask, _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
  }
}

// Sub-block s (of all of K) of `rows` weight rows from wn into panel a (32 rows x 32 words): the
// block heads first when s starts a block (into dv, ov for the legacy types, else h).
template <class Q>
GGQ_BF16_TARGET inline void few_build(const uint8_t* wn, int64_t row_bytes, int rows, int64_t s, uint16_t (*a)[32],
                                      float* dv, float* ov, Head<Q::kSub>* h, const float* f16) {
  const int64_t blk = s / Q::kSub;
  const int j = static_cast<int>(s % Q::kSub);
  const uint8_t* bp = wn + blk * Q::kBytes;
  if (j == 0) {
    if constexpr (Q::kSub == 1) {
      legacy_heads<Q>(bp, row_bytes, rows, dv, ov);
    } else {
      for (int r = 0; r < rows; ++r) Q::head(bp + r * row_bytes, h[r], f16);
    }
  }
  int r = 0;
  if constexpr (kPairPermuted<Q>) {
    for (; r + 2 <= rows; r += 2) {
      __m512bh w0, w1;
      lut_weights2<Q>(bp + r * row_bytes, bp + (r + 1) * row_bytes, j, dv[r], ov[r], dv[r + 1], ov[r + 1], w0, w1);
      _mm512_store_si512(a[r], (__m512i)w0);
      _mm512_store_si512(a[r + 1], (__m512i)w1);
    }
  }
  if constexpr (Q::kSub == 1) {
    for (; r < rows; ++r) _mm512_store_si512(a[r], tile_weights1<Q>(bp + r * row_bytes, dv[r], ov[r]));
  } else {
    for (; r < rows; ++r) _mm512_store_si512(a[r], tile_weights<Q>(bp + r * row_bytes, j, h[r]));
  }
}

// Asks for the next pass's rows (one contiguous run of bytes: `bytes` from `next`) a share per step
// of this pass (`steps` of them), so they are in cache when it starts: its 32 rows are read side by
// side, which the hardware prefetchers follow poorly once the weights come from memory.
inline void few_prefetch(const uint8_t* next, int64_t bytes, int64_t s, int64_t steps) {
  const int64_t lines = (bytes + 63) / 64, per = (lines + steps - 1) / steps;
  for (int64_t l = s * per; l < std::min(lines, (s + 1) * per); ++l) {
    _mm_prefetch(reinterpret_cast<const char*>(next + 64 * l), kFewHint);
  }
}

template <class Q>
GGQ_AMX_TARGET void amx_few_rows_t(const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                                   const uint16_t* xv, int64_t T, const uint16_t* bias, uint16_t* y, int64_t ldy) {
  alignas(64) uint16_t panel[2][32][32];  // two panels of 32 rows x 32 weights (A tiles: rows 0-15, 16-31)
  alignas(64) float c[2][16 * kAmxFewT];
  const AmxFewConfig config(T);
  _tile_loadconfig(&config);  // per call: other code on this thread (oneDNN) configures and releases tiles too
  Head<Q::kSub> h[Q::kSub == 1 ? 1 : 32];
  alignas(64) float dv[32], ov[32];
  const float* f16 = half_table();
  const int64_t steps = k / 32;
  for (int64_t n = n0; n < n1; n += 32) {
    const int rows = static_cast<int>(std::min<int64_t>(32, n1 - n));
    if (rows < 32) std::memset(panel, 0, sizeof(panel));
    const uint8_t* wn = w + n * row_bytes;
    _tile_zero(0);
    _tile_zero(1);
    few_build<Q>(wn, row_bytes, rows, 0, panel[0], dv, ov, h, f16);
    for (int64_t s = 0; s < steps; ++s) {
      if (n + 32 < n1) few_prefetch(wn + 32 * row_bytes, std::min<int64_t>(32, n1 - n - 32) * row_bytes, s, steps);
      // the next sub-block is built before this one is multiplied: its panel's stores are long done by
      // the time the tile loads read them
      if (s + 1 < steps) few_build<Q>(wn, row_bytes, rows, s + 1, panel[(s + 1) & 1], dv, ov, h, f16);
      uint16_t(*a)[32] = panel[s & 1];
      _tile_loadd(6, xv + s * 32 * 16, 64);  // the first T of each pair row's 16 token columns
      _tile_loadd(4, a[0], 64);
      _tile_dpbf16ps(0, 4, 6);
      if (rows > 16) {
        _tile_loadd(5, a[16], 64);
        _tile_dpbf16ps(1, 5, 6);
      }
    }
    _tile_stored(0, c[0], 4 * T);
    _tile_stored(1, c[1], 4 * T);
    for (int g = 0; g * 16 < rows; ++g) {
      const int64_t nr = n + 16 * g;
      amx_few_store(c[g], T, bias != nullptr ? bias + nr : nullptr, std::min(16, rows - 16 * g), y + nr, ldy);
    }
  }
  _tile_release();
}

GGQ_AMX_TARGET inline void simd_amx_few_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1,
                                             int64_t k, const uint16_t* xv, int64_t T, const uint16_t* bias,
                                             uint16_t* y, int64_t ldy) {
  switch (qtype) {
    case kQ4_0: return amx_few_rows_t<TQ4_0>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ4_1: return amx_few_rows_t<TQ4_1>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ5_0: return amx_few_rows_t<TQ5_0>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ5_1: return amx_few_rows_t<TQ5_1>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ8_0: return amx_few_rows_t<TQ8_0>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ4_K: return amx_few_rows_t<TQ4_K>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ5_K: return amx_few_rows_t<TQ5_K>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    case kQ6_K: return amx_few_rows_t<TQ6_K>(w, row_bytes, n0, n1, k, xv, T, bias, y, ldy);
    default: return;  // the front end's check_weight admits only the types above
  }
}
#endif  // GGQ_AMX_TARGET
#endif

#endif
