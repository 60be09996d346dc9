// The AMX-BF16 path of gguf_linear for bfloat16 x with many rows (the front end sends T > kAmxFewT
// here; fewer go to the few-token kernel in gguf_quant_simd.cpp, which gives the same bits):
// namespace heron_gguf::amx, no torch dependency.
//
// Roles in tdpbf16ps (C += A B): A = 16 dequantized weight rows x 32 weights (the bfloat16 rows
// avx512::dequant_rows_bf16_dp writes, the row path's weights in the tile order, read in place with a
// row stride of K);
// B = 16 tokens of x in the VNNI layout (16 pairs of K x 16 tokens x 2), packed once per call;
// C = 16 weight rows x 16 tokens in float32, summed over all of K in the tile, then transposed into
// y[t, n], rounded to bfloat16 and the bias added as the row path adds it. Each task dequantizes 32
// rows at a time and runs 2 A x up to 2 B tiles into 4 C tiles (all 8 tiles).
//
// Summation order: the tile unit's, not the row path's (it does not match sequential fused
// multiply-adds), so results may differ from the row path in the last bits. Within this path an
// output element is the same bits whatever T, the other tokens or the split over threads: its C
// element always sums the same K chunks in the same order, and padding is zeros.
//
// The standard and intrinsic headers come first, outside the target pragma, so their inline
// functions keep the baseline ISA (as in gguf_quant_avx512.cpp).

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace heron_gguf {
namespace avx512 {
void dequant_rows_bf16_dp(int qtype, const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t k, uint16_t* out);
}

namespace amx {

// Whether this CPU has AMX-TILE and AMX-BF16 (cpuid leaf 7: EDX bits 24 and 22) and the kernel lets
// this process use the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA: the
// permission is per process, so every thread of it may then use the tiles). Asked once.
bool available() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) == 0) return false;
    if ((d & (1u << 24)) == 0 || (d & (1u << 22)) == 0) return false;
    constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
  }();
  return ok;
}

}  // namespace amx
}  // namespace heron_gguf

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")

namespace heron_gguf {
namespace amx {
namespace {

// Weight rows per tile (A, C rows), tokens per tile (B, C columns), weights per tile step (A row).
constexpr int64_t kRowsTile = 16, kTokTile = 16, kKStep = 32;

// The tile configuration (palette 1): all 8 tiles 16 rows x 64 bytes. 0-3: C (row tile i, token
// tile j at 2 i + j), 4-5: A (row tiles), 6-7: B (token tiles).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int i = 0; i < 8; ++i) {
      colsb[i] = 64;
      rows[i] = 16;
    }
  }
};

// 16 x 16 dwords in r[0..15] (row i in r[i]) transposed in place.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {  // pairs of rows interleaved per 128-bit lane
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // lane l of r[4 i + j]: column 4 l + j of rows 4 i .. 4 i + 3
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; ++j) {  // gather the four row groups' lanes of each column
    t[j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    t[8 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[4 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    r[12 + j] = _mm512_shuffle_f32x4(t[4 + j], t[12 + j], 0xdd);
  }
}

// float32 -> bfloat16 bits in the low word of each dword, round to nearest even (as c10::BFloat16
// for non-NaN values, and as the row path rounds).
inline __m512i bf16_bits(__m512 v) {
  const __m512i b = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
  return _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
}

// C tiles (row tile i, token tile j) for rows a (A: 16 x K bf16, row stride k) and packed tokens b
// (kTokTile-token groups, k / kKStep blocks of 16 x 32 words each), over all of K; stored to c.
template <int MA, int MB>
inline void tile_sums(const uint16_t* a, const uint16_t* b, int64_t k, float* c) {
  _tile_zero(0);
  if constexpr (MB > 1) _tile_zero(1);
  if constexpr (MA > 1) _tile_zero(2);
  if constexpr (MA > 1 && MB > 1) _tile_zero(3);
  const int64_t group = kTokTile * k;  // words per packed token group
  for (int64_t i = 0; i < k; i += kKStep) {
    const uint16_t* bp = b + i * kTokTile;
    _tile_loadd(4, a + i, k * 2);
    _tile_loadd(6, bp, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (MB > 1) {
      _tile_loadd(7, bp + group, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (MA > 1) {
      _tile_loadd(5, a + kRowsTile * k + i, k * 2);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (MB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  constexpr int64_t kTile = kRowsTile * kTokTile;
  _tile_stored(0, c, 64);
  if constexpr (MB > 1) _tile_stored(1, c + kTile, 64);
  if constexpr (MA > 1) _tile_stored(2, c + 2 * kTile, 64);
  if constexpr (MA > 1 && MB > 1) _tile_stored(3, c + 3 * kTile, 64);
}

// One C tile (16 rows from n, 16 tokens from t; rows < nv and tokens < tv valid) into y[t, n]:
// the float32 sums rounded to bfloat16, then + bias (bfloat16) and rounded again, as the row path.
inline void store_tile(const float* c, const uint16_t* bias, int64_t nv, int64_t tv, uint16_t* y, int64_t ldy) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(c + i * kTokTile);
  transpose16(r);  // r[t]: the 16 rows' sums for token t
  const __mmask16 mask = static_cast<__mmask16>((1u << nv) - 1);
  __m512 bv = _mm512_setzero_ps();
  if (bias != nullptr) {
    const __m256i raw = _mm256_maskz_loadu_epi16(mask, bias);
    bv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
  }
  for (int64_t t = 0; t < tv; ++t) {
    __m512i out = bf16_bits(r[t]);
    if (bias != nullptr) {
      const __m512 rounded = _mm512_castsi512_ps(_mm512_slli_epi32(out, 16));
      out = bf16_bits(_mm512_add_ps(rounded, bv));
    }
    _mm256_mask_storeu_epi16(y + t * ldy, mask, _mm512_cvtepi32_epi16(out));
  }
}

}  // namespace

// xv = x (bfloat16 [T, k]) in the VNNI layout of the B tiles: for each group of 16 tokens (the last
// zero-padded) and each 32 weights of K, 16 pair-rows of 16 tokens x 2 words (a 16 x 16 dword transpose).
// pair_perm (Q4_0, Q4_1): pair-row p holds pair (0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15)[p],
// the order the weights' A tiles come in for those types.
void pack_x(const uint16_t* x, int64_t T, int64_t k, bool pair_perm, uint16_t* xv) {
  const __m512i order = _mm512_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15);
  for (int64_t t0 = 0; t0 < T; t0 += kTokTile) {
    const int64_t tv = std::min(kTokTile, T - t0);
    uint16_t* g = xv + t0 * k;
    for (int64_t i = 0; i < k; i += kKStep) {
      __m512 r[16];
      for (int64_t t = 0; t < 16; ++t) {
        __m512i v = t < tv ? _mm512_loadu_si512(x + (t0 + t) * k + i) : _mm512_setzero_si512();
        if (pair_perm) v = _mm512_permutexvar_epi32(order, v);
        r[t] = _mm512_castsi512_ps(v);
      }
      transpose16(r);
      for (int p = 0; p < 16; ++p) _mm512_storeu_si512(g + i * kTokTile + p * 2 * kTokTile, _mm512_castps_si512(r[p]));
    }
  }
}

// y[t, n] (bfloat16, row stride ldy) for weight rows [n0, n1) of w and all T tokens of xv (pack_x's
// layout); bias: bfloat16 [N] or null. wbuf: the calling thread's scratch, 2 * 16 x k words; c:
// 4 * 16 x 16 floats. Loads this thread's tile configuration and releases the tiles at the end.
void linear_rows(int qtype, const uint8_t* w, int64_t row_bytes, int64_t n0, int64_t n1, int64_t k,
                 const uint16_t* xv, int64_t T, const uint16_t* bias, uint16_t* y, int64_t ldy, uint16_t* wbuf,
                 float* c) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  constexpr int64_t kRowsPass = 2 * kRowsTile, kTile = kRowsTile * kTokTile;
  for (int64_t n = n0; n < n1; n += kRowsPass) {
    const int64_t rows = std::min(kRowsPass, n1 - n);
    const int ma = rows > kRowsTile ? 2 : 1;
    avx512::dequant_rows_bf16_dp(qtype, w + n * row_bytes, row_bytes, rows, k, wbuf);
    if (rows % kRowsTile != 0) {  // zero weights in the last row tile's missing rows
      std::memset(wbuf + rows * k, 0, (ma * kRowsTile - rows) * k * sizeof(uint16_t));
    }
    for (int64_t t = 0; t < T; t += 2 * kTokTile) {
      const uint16_t* b = xv + t * k;
      const bool two = T - t > kTokTile;
      if (ma == 2) {
        two ? tile_sums<2, 2>(wbuf, b, k, c) : tile_sums<2, 1>(wbuf, b, k, c);
      } else {
        two ? tile_sums<1, 2>(wbuf, b, k, c) : tile_sums<1, 1>(wbuf, b, k, c);
      }
      for (int i = 0; i < ma; ++i) {
        const int64_t nr = n + i * kRowsTile, nv = std::min(kRowsTile, n1 - nr);
        for (int j = 0; j < (two ? 2 : 1); ++j) {
          const int64_t tt = t + j * kTokTile, tv = std::min(kTokTile, T - tt);
          store_tile(c + (2 * i + j) * kTile, bias != nullptr ? bias + nr : nullptr, nv, tv, y + tt * ldy + nr, ldy);
        }
      }
    }
  }
  _tile_release();
}

}  // namespace amx
}  // namespace heron_gguf

#pragma GCC pop_options
#endif
