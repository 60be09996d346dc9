// Decode attention straight off the paged KV cache, for the cpu_paged backend.
//
// One task per (request, KV head): the G query heads that share a KV head read each cached
// key/value row once, through the request's slot list, so no per-step copy of the K/V
// histories is made. Scores, softmax and the weighted sum of values accumulate in float32;
// bfloat16 rows are widened into a small per-thread buffer first, which keeps every loop
// over the head dimension a plain float loop the compiler vectorizes.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Work below this many multiply-adds per chunk is not worth waking another thread for.
constexpr int64_t kMinWorkPerChunk = 1 << 16;

struct Dims {
  int64_t heads, kv_heads, group, head_size, num_slots, max_seq, q_req_stride, q_head_stride;
};

// A cache row as float: float32 rows are read in place, bfloat16 rows widened into `buf`.
inline const float* as_float(const float* row, float* /*buf*/, int64_t /*n*/) { return row; }

inline const float* as_float(const c10::BFloat16* row, float* buf, int64_t n) {
  const auto* bits = reinterpret_cast<const uint16_t*>(row);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t wide = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(buf + i, &wide, sizeof(float));
  }
  return buf;
}

// A request's rows are scattered over the cache (one block at a time), which the hardware
// prefetcher follows poorly: each pass keeps the rows this many positions ahead in flight.
constexpr int64_t kPrefetchAhead = 16;

template <typename T>
inline void prefetch_row(const T* row, int64_t n) {
  const auto* bytes = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < n * static_cast<int64_t>(sizeof(T)); off += 64) __builtin_prefetch(bytes + off);
}

// Start a pass: request its first rows together.
template <typename T>
inline void prefetch_head_rows(const T* head, const int64_t* slots, int64_t len, int64_t n) {
  for (int64_t s = 0; s < std::min(kPrefetchAhead, len); ++s) prefetch_row(head + slots[s] * n, n);
}

// Vectorized only because the build allows reassociation (-fassociative-math): a strict
// left-to-right sum cannot be split over vector lanes.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// e^x for x <= 0 (a score minus its row's max), written so that the loop calling it vectorizes
// (std::exp is a scalar library call, and the softmax evaluates one per query and key): x = k ln2 + r
// with |r| <= ln2 / 2 (ln2 in two parts), e^r by its Taylor series to r^7 (truncation below 1e-8
// relative), 2^k put into the exponent bits. Within a few ulp of std::exp; 0 below -87 (where e^x
// leaves float32's normal range).
inline float exp_nonpositive(float x) {
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - k * 0.693145751953125f) - k * 1.42860682030941723e-06f;
  float e = 1.f / 5040.f;
  e = e * r + 1.f / 720.f;
  e = e * r + 1.f / 120.f;
  e = e * r + 1.f / 24.f;
  e = e * r + 1.f / 6.f;
  e = e * r + 0.5f;
  e = e * r + 1.f;
  e = e * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -87.f ? 0.f : e * scale;
}

// kHeadSize > 0 fixes the head size at compile time, so the loops over it unroll completely;
// 0 reads it from `dm`.
template <typename T, int64_t kHeadSize>
void attend(const Dims& dm, const T* q, const T* key_cache, const T* value_cache,
            const int64_t* slots, const int64_t* seq_lens, T* out, float scale, int64_t window,
            int64_t begin, int64_t end) {
  const int64_t G = dm.group, D = kHeadSize > 0 ? kHeadSize : dm.head_size;
  std::vector<float> scratch(G * dm.max_seq + 3 * G * D + D);
  float* scores = scratch.data();            // [G, len] for the current task
  float* queries = scores + G * dm.max_seq;  // [G, D]
  float* acc = queries + G * D;              // [G, D]
  float* top = acc + G * D;                  // [G] running max of each head's scores
  float* row = top + G;                      // [D]
  for (int64_t task = begin; task < end; ++task) {
    const int64_t r = task / dm.kv_heads, kvh = task % dm.kv_heads;
    const int64_t n = seq_lens[r];
    const int64_t start = window > 0 ? std::max<int64_t>(0, n - window) : 0;
    const int64_t len = n - start;
    T* out_heads = out + (r * dm.heads + kvh * G) * D;
    if (len <= 0) {  // nothing to attend to (not produced by the engine): zeros, not NaNs
      std::fill(out_heads, out_heads + G * D, T(0.f));
      continue;
    }
    const int64_t* req_slots = slots + r * dm.max_seq + start;
    const T* k_head = key_cache + kvh * dm.num_slots * D;
    const T* v_head = value_cache + kvh * dm.num_slots * D;
    for (int64_t g = 0; g < G; ++g) {
      const T* src = q + r * dm.q_req_stride + (kvh * G + g) * dm.q_head_stride;
      for (int64_t i = 0; i < D; ++i) queries[g * D + i] = static_cast<float>(src[i]);
    }
    prefetch_head_rows(k_head, req_slots, len, D);
    std::fill(top, top + G, -std::numeric_limits<float>::infinity());
    for (int64_t s = 0; s < len; ++s) {
      if (s + kPrefetchAhead < len) prefetch_row(k_head + req_slots[s + kPrefetchAhead] * D, D);
      const float* k = as_float(k_head + req_slots[s] * D, row, D);
      for (int64_t g = 0; g < G; ++g) {
        const float score = dot(queries + g * D, k, D) * scale;
        scores[g * len + s] = score;
        top[g] = std::max(top[g], score);
      }
    }
    prefetch_head_rows(v_head, req_slots, len, D);  // arrives during the softmax
    for (int64_t g = 0; g < G; ++g) {
      float* p = scores + g * len;
      float total = 0.f;
      const float m = top[g];
      for (int64_t s = 0; s < len; ++s) p[s] = exp_nonpositive(p[s] - m);
      for (int64_t s = 0; s < len; ++s) total += p[s];
      const float inv = 1.f / total;
      for (int64_t s = 0; s < len; ++s) p[s] *= inv;
    }
    std::fill(acc, acc + G * D, 0.f);
    for (int64_t s = 0; s < len; ++s) {
      if (s + kPrefetchAhead < len) prefetch_row(v_head + req_slots[s + kPrefetchAhead] * D, D);
      const float* v = as_float(v_head + req_slots[s] * D, row, D);
      for (int64_t g = 0; g < G; ++g) {
        const float p = scores[g * len + s];
        float* a = acc + g * D;
        for (int64_t i = 0; i < D; ++i) a[i] += p * v[i];
      }
    }
    for (int64_t i = 0; i < G * D; ++i) out_heads[i] = static_cast<T>(acc[i]);
  }
}

template <typename T>
void run(const Dims& dm, const at::Tensor& q, const at::Tensor& key_cache,
         const at::Tensor& value_cache, const at::Tensor& slots, const at::Tensor& seq_lens,
         at::Tensor& out, float scale, int64_t window) {
  const int64_t tasks = out.size(0) * dm.kv_heads;
  const int64_t work = std::max<int64_t>(1, dm.group * dm.max_seq * dm.head_size);
  const int64_t grain = std::max<int64_t>(1, kMinWorkPerChunk / work);
  const T* qp = q.data_ptr<T>();
  const T* kp = key_cache.data_ptr<T>();
  const T* vp = value_cache.data_ptr<T>();
  const int64_t* sp = slots.data_ptr<int64_t>();
  const int64_t* lp = seq_lens.data_ptr<int64_t>();
  T* op = out.data_ptr<T>();
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    switch (dm.head_size) {  // the common head sizes get unrolled loops
      case 64:
        return attend<T, 64>(dm, qp, kp, vp, sp, lp, op, scale, window, begin, end);
      case 128:
        return attend<T, 128>(dm, qp, kp, vp, sp, lp, op, scale, window, begin, end);
      default:
        return attend<T, 0>(dm, qp, kp, vp, sp, lp, op, scale, window, begin, end);
    }
  });
}

}  // namespace

// Attention of one new query per request over its cached keys/values.
//
// q: [R, H, D] (any strides with a unit last stride); key_cache, value_cache: [Hkv, num_slots,
// D] contiguous, q's dtype; slots: [R, S] int64, the cache slot of each key position, valid for
// positions < seq_lens[r] <= S; seq_lens: [R] int64; window > 0 keeps only the last `window`
// positions. Returns [R, H, D] in q's dtype; query head h reads KV head h / (H / Hkv).
at::Tensor paged_decode(at::Tensor q, const at::Tensor& key_cache, const at::Tensor& value_cache,
                        const at::Tensor& slots, const at::Tensor& seq_lens, double scale,
                        int64_t window) {
  TORCH_CHECK(q.dim() == 3 && key_cache.dim() == 3 && value_cache.dim() == 3,
              "paged_decode: q must be [R, H, D] and the caches [Hkv, num_slots, D]");
  TORCH_CHECK(key_cache.sizes() == value_cache.sizes(), "paged_decode: key/value cache shapes differ");
  TORCH_CHECK(key_cache.is_contiguous() && value_cache.is_contiguous(),
              "paged_decode: the caches must be contiguous");
  TORCH_CHECK(q.scalar_type() == key_cache.scalar_type() &&
                  q.scalar_type() == value_cache.scalar_type(),
              "paged_decode: q and the caches must share a dtype");
  TORCH_CHECK(q.device().is_cpu() && key_cache.device().is_cpu(), "paged_decode: CPU tensors only");
  TORCH_CHECK(slots.scalar_type() == at::kLong && seq_lens.scalar_type() == at::kLong,
              "paged_decode: slots and seq_lens must be int64");
  TORCH_CHECK(slots.dim() == 2 && slots.is_contiguous() && slots.size(0) == q.size(0),
              "paged_decode: slots must be a contiguous [R, S] tensor");
  TORCH_CHECK(seq_lens.dim() == 1 && seq_lens.is_contiguous() && seq_lens.size(0) == q.size(0),
              "paged_decode: seq_lens must be a contiguous [R] tensor");
  const int64_t heads = q.size(1), kv_heads = key_cache.size(0), head_size = q.size(2);
  TORCH_CHECK(kv_heads > 0 && heads % kv_heads == 0, "paged_decode: H must be a multiple of Hkv");
  TORCH_CHECK(key_cache.size(2) == head_size, "paged_decode: q and cache head sizes differ");
  if (q.stride(2) != 1) q = q.contiguous();
  const Dims dm{heads, kv_heads, heads / kv_heads, head_size, key_cache.size(1), slots.size(1),
                q.stride(0), q.stride(1)};
  at::Tensor out = at::empty({q.size(0), heads, head_size}, q.options());
  const auto f_scale = static_cast<float>(scale);
  switch (q.scalar_type()) {
    case at::kFloat:
      run<float>(dm, q, key_cache, value_cache, slots, seq_lens, out, f_scale, window);
      break;
    case at::kBFloat16:
      run<c10::BFloat16>(dm, q, key_cache, value_cache, slots, seq_lens, out, f_scale, window);
      break;
    default:
      TORCH_CHECK(false, "paged_decode: float32 or bfloat16 only, not ", q.scalar_type());
  }
  return out;
}

// The step's new keys/values stored at their cache slots, then paged_decode over the cache: one call
// per layer instead of a handful of small torch ops (a batch-1 decode step runs it once per layer).
//
// k, v: [T, Hkv, D] (unit last stride), the cache's dtype; kv_cache: contiguous, laid out as
// [2, Hkv, num_slots, D] (keys, then values); slot_mapping: [T] int64, each token's slot. q, slots,
// seq_lens, scale, window: as paged_decode. Returns [T, H, D] in q's dtype.
at::Tensor paged_write_decode(at::Tensor q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_cache,
                              const at::Tensor& slot_mapping, const at::Tensor& slots, const at::Tensor& seq_lens,
                              double scale, int64_t window) {
  TORCH_CHECK(k.dim() == 3 && v.sizes() == k.sizes(), "paged_write_decode: k and v must be [T, Hkv, D]");
  TORCH_CHECK(k.stride(2) == 1 && v.stride(2) == 1, "paged_write_decode: k and v need a unit last stride");
  TORCH_CHECK(k.scalar_type() == kv_cache.scalar_type() && v.scalar_type() == kv_cache.scalar_type(),
              "paged_write_decode: k, v and the cache must share a dtype");
  TORCH_CHECK(kv_cache.is_contiguous() && kv_cache.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(),
              "paged_write_decode: a contiguous CPU cache and CPU k/v");
  TORCH_CHECK(slot_mapping.scalar_type() == at::kLong && slot_mapping.dim() == 1 && slot_mapping.is_contiguous() &&
                  slot_mapping.size(0) == k.size(0),
              "paged_write_decode: slot_mapping must be a contiguous [T] int64 tensor");
  const int64_t T = k.size(0), kv_heads = k.size(1), D = k.size(2);
  const at::Tensor cache = kv_cache.view({2, kv_heads, -1, D});
  const int64_t num_slots = cache.size(2), row_bytes = D * static_cast<int64_t>(k.element_size());
  const int64_t* slot = slot_mapping.data_ptr<int64_t>();
  auto* base = static_cast<char*>(cache.data_ptr());
  const auto* kp = static_cast<const char*>(k.data_ptr());
  const auto* vp = static_cast<const char*>(v.data_ptr());
  const int64_t es = k.element_size();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(slot[t] >= 0 && slot[t] < num_slots, "paged_write_decode: slot ", slot[t], " out of range");
    for (int64_t h = 0; h < kv_heads; ++h) {
      const int64_t dst = (h * num_slots + slot[t]) * row_bytes;
      std::memcpy(base + dst, kp + (t * k.stride(0) + h * k.stride(1)) * es, row_bytes);
      std::memcpy(base + kv_heads * num_slots * row_bytes + dst, vp + (t * v.stride(0) + h * v.stride(1)) * es,
                  row_bytes);
    }
  }
  return paged_decode(std::move(q), cache[0], cache[1], slots, seq_lens, scale, window);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paged_write_decode", &paged_write_decode, "Store the step's K/V at their slots, then paged_decode",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("kv_cache"), py::arg("slot_mapping"), py::arg("slots"),
        py::arg("seq_lens"), py::arg("scale"), py::arg("window"));
  m.def("paged_decode", &paged_decode, "Decode attention read in place from the paged KV cache",
        py::arg("q"), py::arg("key_cache"), py::arg("value_cache"), py::arg("slots"),
        py::arg("seq_lens"), py::arg("scale"), py::arg("window"));
}
