// The AVX512 (F, BW, VL, VNNI) build of gguf_quant_kernels.cpp: namespace heron_gguf::avx512. Its
// dot_rows_bf16_dp also needs AVX512-BF16 (vdpbf16ps) and AVX512-VBMI (vpmultishiftqb) and carries that
// target itself: the front end calls it only on CPUs that have both.
//
// The standard and intrinsic headers come first, outside the target pragma, so their inline
// functions keep the baseline ISA (a copy built for AVX512 must never be the one the linker keeps).

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#define GGQ_NS avx512
#define GGQ_ISA 2
#define GGQ_BF16_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,avx512vbmi")))
#define GGQ_AMX_TARGET __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16,avx512vbmi,amx-tile,amx-bf16")))
#include "gguf_quant_kernels.cpp"
#pragma GCC pop_options
#endif
