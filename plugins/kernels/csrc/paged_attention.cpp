// Causal attention straight off the paged KV cache, for the cpu_paged backend.
//
// Every query row, whether it is a decode, one token of a speculative verification or one of a
// prompt's thousands, is computed the same way: its scores against keys start .. pos (its own
// position), a softmax over them, the weighted sum of values, all in float32 and in an order
// fixed by the row alone. So a row gives the same bits whether the prompt it belongs to is
// computed whole, in chunks, or as the remainder after a prefix-cache hit, and whether it is
// alone in its step or batched with others.
//
// Work is split into tasks of (request, KV head, tile of up to kTileRows consecutive query rows):
// the G query heads of the tile's rows share each cached key/value row read through the
// request's slot list, widened to float32 in blocks of kKeyBlock keys. Threads take tasks from a
// shared counter, the longest (latest) tiles first, so a prompt's triangular work spreads evenly.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace {

// Work below this many multiply-adds in a call is not worth waking another thread for.
constexpr int64_t kMinParallelWork = 1 << 16;
// Query rows per task: a prompt's rows share each key block they read.
constexpr int64_t kTileRows = 16;
// Keys widened to float32 at a time (kKeyBlock x D floats stay in L1 for D <= 128).
constexpr int64_t kKeyBlock = 32;

struct Dims {
  int64_t heads, kv_heads, group, head_size, num_slots, max_seq, q_row_stride, q_head_stride;
};

// Cache rows as float: bfloat16 widened, float32 copied.
inline void widen_row(const float* src, float* dst, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

inline void widen_row(const c10::BFloat16* src, float* dst, int64_t n) {
  const auto* bits = reinterpret_cast<const uint16_t*>(src);
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + i));
    _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
  }
#endif
  for (; i < n; ++i) {
    const uint32_t wide = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(dst + i, &wide, sizeof(float));
  }
}

// The arithmetic every row goes through. Each helper fixes its own summation order (explicit
// vector code, or strict left-to-right scalar loops: the build allows neither reassociation nor
// contraction), so a row's result does not depend on the other rows of its task.

#if defined(__AVX512F__)

// Scores of NQ queries against a block of kKeyBlock keys held transposed (kt[i * kKeyBlock + s]):
// lane s sums q[i] * k_s[i] over i = 0 .. D - 1 in order, one fused multiply-add at a time, then
// scales. out[qi * kKeyBlock + s].
static_assert(kKeyBlock == 32, "scores_block holds a key block in two vectors");
template <int NQ>
inline void scores_block(const float* const* qv, const float* kt, int64_t D, float scale, float* out) {
  __m512 acc[NQ][2];
  for (int qi = 0; qi < NQ; ++qi) acc[qi][0] = acc[qi][1] = _mm512_setzero_ps();
  for (int64_t i = 0; i < D; ++i) {
    const __m512 k0 = _mm512_loadu_ps(kt + i * kKeyBlock), k1 = _mm512_loadu_ps(kt + i * kKeyBlock + 16);
    for (int qi = 0; qi < NQ; ++qi) {
      const __m512 b = _mm512_set1_ps(qv[qi][i]);
      acc[qi][0] = _mm512_fmadd_ps(b, k0, acc[qi][0]);
      acc[qi][1] = _mm512_fmadd_ps(b, k1, acc[qi][1]);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int qi = 0; qi < NQ; ++qi) {
    _mm512_storeu_ps(out + qi * kKeyBlock, _mm512_mul_ps(acc[qi][0], sc));
    _mm512_storeu_ps(out + qi * kKeyBlock + 16, _mm512_mul_ps(acc[qi][1], sc));
  }
}

// 16 elements of a value row as float32 (bfloat16 widened exactly)
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const c10::BFloat16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// acc_q[i] += p_q[s] * v_s[i] for s = 0 .. count - 1 in order (v_s = row(s): D values, float32 or
// bfloat16), for NQ queries sharing the rows; NV vectors (elements d0 .. d0 + 16 NV of D, the last
// one masked) held in registers over the whole run of rows. The fixed-size loops are unrolled by pragma:
// left to itself GCC also kept `a` in memory and stored all NQ x NV sums after every row (~10% of a call).
template <int NQ, int NV, typename Row>
inline void values_chunk(float* const* acc, const float* const* p, Row row, int64_t count, int64_t d0,
                         __mmask16 last) {
  __m512 a[NQ][NV];
  auto mask = [&](int x) { return x == NV - 1 ? last : static_cast<__mmask16>(0xffff); };
#pragma GCC unroll 16
  for (int qi = 0; qi < NQ; ++qi)
#pragma GCC unroll 16
    for (int x = 0; x < NV; ++x) a[qi][x] = _mm512_maskz_loadu_ps(mask(x), acc[qi] + d0 + 16 * x);
  for (int64_t s = 0; s < count; ++s) {
    const auto* v = row(s) + d0;
    __m512 vv[NV];
#pragma GCC unroll 16
    for (int x = 0; x < NV; ++x) vv[x] = load16(v + 16 * x, mask(x));
#pragma GCC unroll 16
    for (int qi = 0; qi < NQ; ++qi) {
      const __m512 b = _mm512_set1_ps(p[qi][s]);
#pragma GCC unroll 16
      for (int x = 0; x < NV; ++x) a[qi][x] = _mm512_fmadd_ps(b, vv[x], a[qi][x]);
    }
  }
#pragma GCC unroll 16
  for (int qi = 0; qi < NQ; ++qi)
#pragma GCC unroll 16
    for (int x = 0; x < NV; ++x) _mm512_mask_storeu_ps(acc[qi] + d0 + 16 * x, mask(x), a[qi][x]);
}

template <int NQ, typename Row>
inline void values_block(float* const* acc, const float* const* p, Row row, int64_t count, int64_t D) {
  for (int64_t d0 = 0; d0 < D; d0 += 64) {
    const int64_t width = std::min<int64_t>(64, D - d0), tail = width % 16;
    const auto last = static_cast<__mmask16>(tail == 0 ? 0xffffu : (1u << tail) - 1);
    switch ((width + 15) / 16) {
      case 1: values_chunk<NQ, 1>(acc, p, row, count, d0, last); break;
      case 2: values_chunk<NQ, 2>(acc, p, row, count, d0, last); break;
      case 3: values_chunk<NQ, 3>(acc, p, row, count, d0, last); break;
      default: values_chunk<NQ, 4>(acc, p, row, count, d0, last); break;
    }
  }
}

#if defined(__AVX512BF16__)
// bfloat16 caches: the scores of NQ queries against a block of keys held as transposed bfloat16 pairs
// (kt[i * kKeyBlock + s] = key s's dimensions 2i, 2i + 1): lane s adds the pair products of
// dimensions 0 .. D - 1 in order (vdpbf16ps, products exact in float32), then scales.
template <int NQ>
inline void scores_block_pairs(const uint32_t* const* qv, const uint32_t* kt, int64_t pairs, float scale,
                               float* out) {
  __m512 acc[NQ][2];
  for (int qi = 0; qi < NQ; ++qi) acc[qi][0] = acc[qi][1] = _mm512_setzero_ps();
  for (int64_t i = 0; i < pairs; ++i) {
    const __m512bh k0 = (__m512bh)_mm512_loadu_si512(kt + i * kKeyBlock);
    const __m512bh k1 = (__m512bh)_mm512_loadu_si512(kt + i * kKeyBlock + 16);
    for (int qi = 0; qi < NQ; ++qi) {
      const __m512bh b = (__m512bh)_mm512_set1_epi32(static_cast<int>(qv[qi][i]));
      acc[qi][0] = _mm512_dpbf16_ps(acc[qi][0], b, k0);
      acc[qi][1] = _mm512_dpbf16_ps(acc[qi][1], b, k1);
    }
  }
  const __m512 sc = _mm512_set1_ps(scale);
  for (int qi = 0; qi < NQ; ++qi) {
    _mm512_storeu_ps(out + qi * kKeyBlock, _mm512_mul_ps(acc[qi][0], sc));
    _mm512_storeu_ps(out + qi * kKeyBlock + 16, _mm512_mul_ps(acc[qi][1], sc));
  }
}
constexpr bool kHavePairs = true;
#else
template <int NQ>
inline void scores_block_pairs(const uint32_t* const*, const uint32_t*, int64_t, float, float*) {}
constexpr bool kHavePairs = false;
#endif

// kt[i * kKeyBlock + s] = rows[s][i]: 16 x 16 tiles through the shuffle unit where D allows. The rows
// are read where they are (the cache, for float32 keys and bfloat16 pairs), not copied first.
inline void transpose_block(const float* const* rows, float* kt, int64_t D) {
  if (D % 16 != 0) {
    for (int64_t s = 0; s < kKeyBlock; ++s)
      for (int64_t i = 0; i < D; ++i) kt[i * kKeyBlock + s] = rows[s][i];
    return;
  }
  for (int64_t s0 = 0; s0 < kKeyBlock; s0 += 16) {
    for (int64_t i0 = 0; i0 < D; i0 += 16) {
      __m512 r[16], t[16];
      for (int x = 0; x < 16; ++x) r[x] = _mm512_loadu_ps(rows[s0 + x] + i0);
      for (int x = 0; x < 16; x += 2) {
        t[x] = _mm512_unpacklo_ps(r[x], r[x + 1]);
        t[x + 1] = _mm512_unpackhi_ps(r[x], r[x + 1]);
      }
      for (int x = 0; x < 16; x += 4) {
        r[x] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[x]), _mm512_castps_pd(t[x + 2])));
        r[x + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[x]), _mm512_castps_pd(t[x + 2])));
        r[x + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[x + 1]), _mm512_castps_pd(t[x + 3])));
        r[x + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[x + 1]), _mm512_castps_pd(t[x + 3])));
      }
      // r[4a + b] now holds, in each 128-bit lane c, elements i0 + 4c + b' of rows s0 + 4a .. 4a + 3;
      // two rounds of 128-bit shuffles gather the lanes
      for (int x = 0; x < 8; ++x) {
        const int lo = (x / 4) * 8 + (x % 4), hi = lo + 4;
        t[x] = _mm512_shuffle_f32x4(r[lo], r[hi], 0x88);
        t[x + 8] = _mm512_shuffle_f32x4(r[lo], r[hi], 0xdd);
      }
      for (int x = 0; x < 4; ++x) {
        r[x] = _mm512_shuffle_f32x4(t[x], t[x + 4], 0x88);
        r[x + 8] = _mm512_shuffle_f32x4(t[x], t[x + 4], 0xdd);
        r[x + 4] = _mm512_shuffle_f32x4(t[x + 8], t[x + 12], 0x88);
        r[x + 12] = _mm512_shuffle_f32x4(t[x + 8], t[x + 12], 0xdd);
      }
      for (int x = 0; x < 16; ++x) _mm512_storeu_ps(kt + (i0 + x) * kKeyBlock + s0, r[x]);
    }
  }
}

// e^x for x <= 0 (a score minus its row's max), 16 at a time: x = k ln2 + r with |r| <= ln2 / 2
// (ln2 in two parts), e^r by its Taylor series to r^7 (truncation below 1e-8 relative), 2^k put
// into the exponent bits. Within a few ulp of std::exp; 0 below -87.
inline __m512 exp_nonpositive(__m512 x) {
  const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.42860682030941723e-06f), r);
  __m512 e = _mm512_set1_ps(1.f / 5040.f);
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f / 720.f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f / 120.f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f / 24.f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f / 6.f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(0.5f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f));
  e = _mm512_fmadd_ps(e, r, _mm512_set1_ps(1.f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  const __m512 y = _mm512_mul_ps(e, _mm512_castsi512_ps(bits));
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.f), _CMP_GE_OQ), y);
}

// p[0 .. n) <- softmax(p): the max, e^(p - max), their sum (16 lanes, then reduced), the scaling.
inline void softmax(float* p, int64_t n) {
  __m512 top = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  int64_t s = 0;
  for (; s + 16 <= n; s += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(p + s));
  const __mmask16 tail = static_cast<__mmask16>((1u << (n - s)) - 1);
  if (s < n) top = _mm512_mask_max_ps(top, tail, top, _mm512_maskz_loadu_ps(tail, p + s));
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(top));
  __m512 total = _mm512_setzero_ps();
  for (s = 0; s + 16 <= n; s += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(p + s), m));
    _mm512_storeu_ps(p + s, e);
    total = _mm512_add_ps(total, e);
  }
  if (s < n) {
    const __m512 e = _mm512_maskz_mov_ps(tail, exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p + s), m)));
    _mm512_mask_storeu_ps(p + s, tail, e);
    total = _mm512_add_ps(total, e);
  }
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(total));
  for (s = 0; s + 16 <= n; s += 16) _mm512_storeu_ps(p + s, _mm512_mul_ps(_mm512_loadu_ps(p + s), inv));
  if (s < n) _mm512_mask_storeu_ps(p + s, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, p + s), inv));
}

#else  // portable: strict left-to-right sums

template <int NQ>
inline void scores_block(const float* const* qv, const float* kt, int64_t D, float scale, float* out) {
  for (int qi = 0; qi < NQ; ++qi)
    for (int64_t s = 0; s < kKeyBlock; ++s) {
      float acc = 0.f;
      for (int64_t i = 0; i < D; ++i) acc = std::fma(qv[qi][i], kt[i * kKeyBlock + s], acc);
      out[qi * kKeyBlock + s] = acc * scale;
    }
}

template <int NQ, typename Row>
inline void values_block(float* const* acc, const float* const* p, Row row, int64_t count, int64_t D) {
  for (int qi = 0; qi < NQ; ++qi)
    for (int64_t s = 0; s < count; ++s) {
      const auto* v = row(s);
      for (int64_t i = 0; i < D; ++i) acc[qi][i] = std::fma(p[qi][s], static_cast<float>(v[i]), acc[qi][i]);
    }
}

inline void transpose_block(const float* const* rows, float* kt, int64_t D) {
  for (int64_t s = 0; s < kKeyBlock; ++s)
    for (int64_t i = 0; i < D; ++i) kt[i * kKeyBlock + s] = rows[s][i];
}

inline void softmax(float* p, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < n; ++s) m = std::max(m, p[s]);
  float total = 0.f;
  for (int64_t s = 0; s < n; ++s) {
    p[s] = std::exp(p[s] - m);
    total += p[s];
  }
  const float inv = 1.f / total;
  for (int64_t s = 0; s < n; ++s) p[s] *= inv;
}

#endif

// Asks for the cache rows of keys [s0, s1) ahead of their use: a request's slots are scattered over
// the cache's blocks, which the hardware prefetchers do not follow from one block to the next.
template <typename T>
inline void prefetch_rows(const T* head, const int64_t* slots, int64_t s0, int64_t s1, int64_t D) {
  const int64_t bytes = D * static_cast<int64_t>(sizeof(T));
  for (int64_t s = s0; s < s1; ++s) {
    const char* p = reinterpret_cast<const char*>(head + slots[s] * D);
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(p + o, 0, 3);
  }
}

struct Task {
  int64_t req, kv_head, row0, rows;
};

struct Problem {
  Dims dm;
  const int64_t* slots;      // [R, S]
  const int64_t* seq_lens;   // [R]
  const int64_t* q_start;    // [R + 1] first token row of each request
  float scale;
  int64_t window;
};

// Scratch of one thread, grown to the largest task it meets.
struct Scratch {
  std::vector<float> queries, scores, acc, rows, keys_t, block_scores, zeros;
};

// f<NQ>(first head of the group, NQ) for the heads of a row, in groups of up to 4.
template <typename F>
inline void for_head_groups(int64_t G, F&& f) {
  for (int64_t g0 = 0; g0 < G; g0 += 4) {
    switch (std::min<int64_t>(4, G - g0)) {
      case 1: f(std::integral_constant<int, 1>{}, g0); break;
      case 2: f(std::integral_constant<int, 2>{}, g0); break;
      case 3: f(std::integral_constant<int, 3>{}, g0); break;
      default: f(std::integral_constant<int, 4>{}, g0); break;
    }
  }
}

template <typename T>
void run_task(const Problem& pb, const Task& task, const T* q, const T* key_cache, const T* value_cache, T* out,
              Scratch& sc) {
  const Dims& dm = pb.dm;
  const int64_t G = dm.group, D = dm.head_size, r = task.req, kvh = task.kv_head;
  const int64_t n = pb.seq_lens[r], q_len = pb.q_start[r + 1] - pb.q_start[r];
  const int64_t first_pos = n - q_len + task.row0;  // position of the tile's first row
  const int64_t rows = task.rows, nq = rows * G;
  // row j (position first_pos + j) attends keys start(j) .. first_pos + j
  auto start_of = [&](int64_t j) {
    return pb.window > 0 ? std::max<int64_t>(0, first_pos + j + 1 - pb.window) : int64_t{0};
  };
  const int64_t lo = start_of(0), hi = first_pos + rows;  // keys [lo, hi) cover the tile
  const int64_t span = std::max<int64_t>(hi - lo, 1);
  sc.queries.resize(nq * D);
  sc.scores.resize(nq * span);
  sc.acc.resize(nq * D);
  sc.rows.resize(kKeyBlock * D);
  sc.keys_t.resize(kKeyBlock * D);
  sc.block_scores.resize(4 * kKeyBlock);
  float* queries = sc.queries.data();  // [rows * G, D]
  float* scores = sc.scores.data();    // [rows * G, span]: row j's scores start at its own start
  float* acc = sc.acc.data();          // [rows * G, D]
  float* block = sc.rows.data();       // [kKeyBlock, D] the block's keys or values as float
  float* kt = sc.keys_t.data();        // [D, kKeyBlock] the block's keys transposed
  float* bs = sc.block_scores.data();  // [4, kKeyBlock]
  if (static_cast<int64_t>(sc.zeros.size()) < D) sc.zeros.assign(D, 0.f);
  const float* zeros = sc.zeros.data();  // a row of D zeros
  // bfloat16 keys and queries on a CPU with AVX512-BF16: scores from bfloat16 pairs (no widening)
  constexpr bool kBF16 = std::is_same_v<T, c10::BFloat16>;
  const bool pairs = kHavePairs && kBF16 && D % 2 == 0;
  auto* query_pairs = reinterpret_cast<uint32_t*>(queries);  // [rows * G, D / 2] when pairs
  for (int64_t j = 0; j < rows; ++j) {
    for (int64_t g = 0; g < G; ++g) {
      const T* src = q + (pb.q_start[r] + task.row0 + j) * dm.q_row_stride + (kvh * G + g) * dm.q_head_stride;
      if (pairs) {
        std::memcpy(query_pairs + (j * G + g) * (D / 2), src, D * sizeof(T));
        continue;
      }
      float* dst = queries + (j * G + g) * D;
      for (int64_t i = 0; i < D; ++i) dst[i] = static_cast<float>(src[i]);
    }
  }
  const int64_t* req_slots = pb.slots + r * dm.max_seq;
  const T* k_head = key_cache + kvh * dm.num_slots * D;
  const T* v_head = value_cache + kvh * dm.num_slots * D;
  prefetch_rows(k_head, req_slots, lo, std::min(hi, lo + kKeyBlock), D);
  for (int64_t b0 = lo; b0 < hi; b0 += kKeyBlock) {  // scores, a block of keys at a time
    const int64_t b1 = std::min(hi, b0 + kKeyBlock);
    if (b1 < hi) {  // the next block's keys, or (at the last block) the first block's values
      prefetch_rows(k_head, req_slots, b1, std::min(hi, b1 + kKeyBlock), D);
    } else {
      prefetch_rows(v_head, req_slots, lo, std::min(hi, lo + kKeyBlock), D);
    }
    const float* key_rows[kKeyBlock];  // the block's keys as float32 rows (bfloat16 pairs as 32-bit words)
    for (int64_t s = b1 - b0; s < kKeyBlock; ++s) key_rows[s] = zeros;  // past the tile's keys: zeros
    if (pairs || std::is_same_v<T, float>) {  // read in place from the cache
      for (int64_t s = b0; s < b1; ++s) key_rows[s - b0] = reinterpret_cast<const float*>(k_head + req_slots[s] * D);
    } else {  // bfloat16 widened first
      for (int64_t s = b0; s < b1; ++s) {
        widen_row(k_head + req_slots[s] * D, block + (s - b0) * D, D);
        key_rows[s - b0] = block + (s - b0) * D;
      }
    }
    transpose_block(key_rows, kt, pairs ? D / 2 : D);
    for (int64_t j = 0; j < rows; ++j) {
      const int64_t st = start_of(j), s0 = std::max(b0, st), s1 = std::min(b1, first_pos + j + 1);
      if (s0 >= s1) continue;
      for_head_groups(G, [&](auto nq_c, int64_t g0) {
        constexpr int NQ = decltype(nq_c)::value;
        if (pairs) {
          const uint32_t* qv[NQ];
          for (int qi = 0; qi < NQ; ++qi) qv[qi] = query_pairs + (j * G + g0 + qi) * (D / 2);
          scores_block_pairs<NQ>(qv, reinterpret_cast<const uint32_t*>(kt), D / 2, pb.scale, bs);
        } else {
          const float* qv[NQ];
          for (int qi = 0; qi < NQ; ++qi) qv[qi] = queries + (j * G + g0 + qi) * D;
          scores_block<NQ>(qv, kt, D, pb.scale, bs);
        }
        for (int qi = 0; qi < NQ; ++qi)
          std::memcpy(scores + (j * G + g0 + qi) * span + (s0 - st), bs + qi * kKeyBlock + (s0 - b0),
                      (s1 - s0) * sizeof(float));
      });
    }
  }
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t g = 0; g < G; ++g) softmax(scores + (j * G + g) * span, first_pos + j + 1 - start_of(j));
  std::fill(acc, acc + nq * D, 0.f);
  // the weighted sum of values, in key order: a tile of several rows widens each block of values once
  // for all of them, a single row reads the cache rows directly (the same float32 values either way)
  const bool widen = rows > 1;
  for (int64_t b0 = lo; b0 < hi; b0 += kKeyBlock) {
    const int64_t b1 = std::min(hi, b0 + kKeyBlock);
    prefetch_rows(v_head, req_slots, b1, std::min(hi, b1 + kKeyBlock), D);
    if (widen)
      for (int64_t s = b0; s < b1; ++s) widen_row(v_head + req_slots[s] * D, block + (s - b0) * D, D);
    for (int64_t j = 0; j < rows; ++j) {
      const int64_t st = start_of(j), s0 = std::max(b0, st), s1 = std::min(b1, first_pos + j + 1);
      if (s0 >= s1) continue;
      for_head_groups(G, [&](auto nq_c, int64_t g0) {
        constexpr int NQ = decltype(nq_c)::value;
        float* a[NQ];
        const float* pr[NQ];
        for (int qi = 0; qi < NQ; ++qi) {
          a[qi] = acc + (j * G + g0 + qi) * D;
          pr[qi] = scores + (j * G + g0 + qi) * span + (s0 - st);
        }
        const int64_t count = s1 - s0;
        if (widen) {
          const float* v = block + (s0 - b0) * D;
          values_block<NQ>(a, pr, [v, D](int64_t s) { return v + s * D; }, count, D);
        } else {
          const int64_t* sl = req_slots + s0;
          values_block<NQ>(a, pr, [v_head, sl, D](int64_t s) { return v_head + sl[s] * D; }, count, D);
        }
      });
    }
  }
  for (int64_t j = 0; j < rows; ++j) {
    T* dst = out + ((pb.q_start[r] + task.row0 + j) * dm.heads + kvh * G) * D;
    for (int64_t i = 0; i < G * D; ++i) dst[i] = static_cast<T>(acc[j * G * D + i]);
  }
}

template <typename T>
void run(const Problem& pb, int64_t num_reqs, const at::Tensor& q, const at::Tensor& key_cache,
         const at::Tensor& value_cache, at::Tensor& out) {
  const Dims& dm = pb.dm;
  std::vector<Task> tasks;
  std::vector<int64_t> cost;
  int64_t work = 0;
  for (int64_t r = 0; r < num_reqs; ++r) {
    const int64_t q_len = pb.q_start[r + 1] - pb.q_start[r], n = pb.seq_lens[r];
    TORCH_CHECK(q_len >= 0 && n >= q_len && n <= dm.max_seq, "paged_attention: request ", r, " has ", q_len,
                " query rows and ", n, " keys (slot table width ", dm.max_seq, ")");
    for (int64_t row0 = 0; row0 < q_len; row0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, q_len - row0);
      const int64_t keys = n - q_len + row0 + rows;  // an upper bound with a window
      for (int64_t h = 0; h < dm.kv_heads; ++h) {
        tasks.push_back({r, h, row0, rows});
        cost.push_back(rows * keys);
      }
      work += rows * keys * dm.heads * dm.head_size;
    }
  }
  // the costliest tasks first, so the last ones handed out are short
  std::vector<int64_t> order(tasks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cost[a] > cost[b]; });
  const T* qp = q.data_ptr<T>();
  const T* kp = key_cache.data_ptr<T>();
  const T* vp = value_cache.data_ptr<T>();
  T* op = out.data_ptr<T>();
  std::atomic<int64_t> next{0};
  const int64_t total = static_cast<int64_t>(tasks.size());
  auto worker = [&](int64_t, int64_t) {
    thread_local Scratch sc;
    for (int64_t i = next.fetch_add(1); i < total; i = next.fetch_add(1))
      run_task<T>(pb, tasks[order[i]], qp, kp, vp, op, sc);
  };
  const int64_t workers = work < kMinParallelWork ? 1 : std::min<int64_t>(at::get_num_threads(), total);
  if (workers <= 1)
    worker(0, 1);
  else
    at::parallel_for(0, workers, 1, worker);
}

}  // namespace

// Causal attention of each request's new query rows over its cached keys/values.
//
// q: [T, H, D] (unit last stride), the rows of request r being T rows q_start[r] .. q_start[r + 1]
// at positions seq_lens[r] - q_len .. seq_lens[r] - 1; key_cache, value_cache: [Hkv, num_slots, D]
// contiguous, q's dtype; slots: [R, S] int64, the cache slot of each key position, valid for
// positions < seq_lens[r] <= S; window > 0 keeps the last `window` positions of each row's keys.
// Returns [T, H, D] in q's dtype; query head h reads KV head h / (H / Hkv).
at::Tensor paged_attention(at::Tensor q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                           const at::Tensor& slots, const at::Tensor& seq_lens, const at::Tensor& q_start,
                           double scale, int64_t window) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.dim() == 3,
              "paged_attention: q must be [T, H, D] and the caches [Hkv, num_slots, D]");
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes(), "paged_attention: key/value cache shapes differ");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_attention: the caches must be contiguous");
  TORCH_CHECK(q.scalar_type() == key_cache.scalar_type() && q.scalar_type() == value_cache.scalar_type(),
              "paged_attention: q and the caches must share a dtype");
  TORCH_CHECK(q.device().is_cpu() && key_cache.device().is_cpu(), "paged_attention: CPU tensors only");
  TORCH_CHECK(slots.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong &&
                  q_start.scalar_type() == at::kLong,
              "paged_attention: slots, seq_lens and q_start must be int64");
  TORCH_CHECK(slots.dim() == 2 && slots.is_contiguous(), "paged_attention: slots must be a contiguous [R, S] tensor");
  const int64_t num_reqs = slots.size(0);
  TORCH_CHECK(seq_lens.dim() == 1 && seq_lens.is_contiguous() && seq_lens.size(0) == num_reqs,
              "paged_attention: seq_lens must be a contiguous [R] tensor");
  TORCH_CHECK(q_start.dim() == 1 && q_start.is_contiguous() && q_start.size(0) == num_reqs + 1,
              "paged_attention: q_start must be a contiguous [R + 1] tensor");
  const int64_t heads = q.size(1), kv_heads = key_cache.size(0), head_size = q.size(2);
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "paged_attention: H must be a multiple of Hkv");
  TORCH_CHECK(key_cache.size(2) == head_size, "paged_attention: q and cache head sizes differ");
  const int64_t* qs = q_start.data_ptr<int64_t>();
  TORCH_CHECK(qs[0] == 0 && qs[num_reqs] == q.size(0), "paged_attention: q_start must run from 0 to T");
  if (q.stride(2) != 1) q = q.contiguous();
  const Problem pb{Dims{heads, kv_heads, heads / kv_heads, head_size, key_cache.size(1), slots.size(1),
                        q.stride(0), q.stride(1)},
                   slots.data_ptr<int64_t>(), seq_lens.data_ptr<int64_t>(), qs, static_cast<float>(scale), window};
  at::Tensor out = at::empty({q.size(0), heads, head_size}, q.options());
  switch (q.scalar_type()) {
    case at::kFloat:
      run<float>(pb, num_reqs, q, key_cache, value_cache, out);
      break;
    case at::kBFloat16:
      run<c10::BFloat16>(pb, num_reqs, q, key_cache, value_cache, out);
      break;
    default:
      TORCH_CHECK(false, "paged_attention: float32 or bfloat16 only, not ", q.scalar_type());
  }
  return out;
}

// The step's new keys/values stored at their cache slots, then paged_attention over the cache: one
// call per layer instead of a handful of small torch ops.
//
// k, v: [T, Hkv, D] (unit last stride), the cache's dtype; kv_cache: contiguous, laid out as
// [2, Hkv, num_slots, D] (keys, then values); slot_mapping: [T] int64, each token's slot. The other
// arguments: as paged_attention. Returns [T, H, D] in q's dtype.
at::Tensor paged_write_attention(at::Tensor q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_cache,
                                 const at::Tensor& slot_mapping, const at::Tensor& slots, const at::Tensor& seq_lens,
                                 const at::Tensor& q_start, double scale, int64_t window) {
  TORCH_CHECK(k.dim() == 3 && v.sizes() == k.sizes(), "paged_write_attention: k and v must be [T, Hkv, D]");
  TORCH_CHECK(k.stride(2) == 1 && v.stride(2) == 1, "paged_write_attention: k and v need a unit last stride");
  TORCH_CHECK(k.scalar_type() == kv_cache.scalar_type() && v.scalar_type() == kv_cache.scalar_type(),
              "paged_write_attention: k, v and the cache must share a dtype");
  TORCH_CHECK(kv_cache.is_contiguous() && kv_cache.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "paged_write_attention: a contiguous CPU cache and CPU k/v");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1 && slot_mapping.is_contiguous() &&
                  slot_mapping.size(0) == k.size(0),
              "paged_write_attention: slot_mapping must be a contiguous [T] int64 tensor");
  const int64_t T = k.size(0), kv_heads = k.size(1), D = k.size(2);
  const at::Tensor cache = kv_cache.view({2, kv_heads, -1, D});
  const int64_t num_slots = cache.size(2), row_bytes = D * static_cast<int64_t>(k.element_size());
  const int64_t* slot = slot_mapping.data_ptr<int64_t>();
  auto* base = static_cast<char*>(cache.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  const int64_t es = k.element_size();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(slot[t] >= 0 && slot[t] < num_slots, "paged_write_attention: slot ", slot[t], " out of range");
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t dst = (h * num_slots + slot[t]) * row_bytes;
      std::memcpy(base + dst, kp + (t * k.stride(0) + h * k.stride(1)) * es, row_bytes);
      std::memcpy(base + kv_heads * num_slots * row_bytes + dst, vp + (t * v.stride(0) + h * v.stride(1)) * es,
                  row_bytes);
    }
  }
  return paged_attention(std::move(q), cache[0], cache[1], slots, seq_lens, q_start, scale, window);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("write_attention_address", [] { return reinterpret_cast<int64_t>(&paged_write_attention); },
        "Address of paged_write_attention (the C++ signature above), for callers in C++");
  m.def("paged_write_attention", &paged_write_attention, "Store the step's K/V at their slots, then paged_attention",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_cache"), py::arg("slot_mapping"), py::arg("slots"),
        py::arg("seq_lens"), py::arg("q_start"), py::arg("scale"), py::arg("window"));
  m.def("paged_attention", &paged_attention, "Causal attention read in place from the paged KV cache",
        py::arg("q"), py::arg("key_cache"), py::arg("value_cache"), py::arg("slots"), py::arg("seq_lens"),
        py::arg("q_start"), py::arg("scale"), py::arg("window"));
}
