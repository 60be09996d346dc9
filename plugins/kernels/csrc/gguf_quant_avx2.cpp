// The AVX2 (+FMA, F16C) build of gguf_quant_kernels.cpp: namespace heron_gguf::avx2.
//
// The standard and intrinsic headers come first, outside the target pragma, so their inline
// functions keep the baseline ISA (a copy built for AVX2 must never be the one the linker keeps).

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define GGQ_NS avx2
#define GGQ_ISA 1
#include "gguf_quant_kernels.cpp"
#pragma GCC pop_options
#endif
