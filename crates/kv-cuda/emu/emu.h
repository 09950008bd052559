// Host emulation of the CUDA features kv-cuda's kernels use, so that the kernels (the text of
// kv_cuda::kernel_source()) compile with a host C++ compiler and run without a GPU, bit for
// bit as on the device (IEEE binary32 on SSE, round to nearest even, -ffp-contract=off).
// Threads are ucontext coroutines run one block at a time; shuffles and __syncwarp are warp
// barriers, __syncthreads a block barrier, and a warp or block whose threads reach different
// barriers is reported, which CUDA would leave undefined. Shared memory is refilled with
// 0xA5 before every block, so a kernel that reads words it did not write is caught.
// Driven by kv-codec's `cuda_emulate` example.
#pragma once
#include <cstdint>
#include <cstring>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include <ucontext.h>
#include <math.h>

struct dim3 { unsigned x, y, z; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

namespace emu {
extern unsigned cur;
extern dim3 block_idx, block_dim;
extern uint64_t slots[1024];
void barrier();
void warp_barrier();
}
struct EmuTid { unsigned x, y, z; };
#define threadIdx (EmuTid{emu::cur, 0u, 0u})
#define blockIdx emu::block_idx
#define blockDim emu::block_dim
#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __shared__
#define __restrict__
#define __launch_bounds__(...)

inline void __syncthreads() { emu::barrier(); }
inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
template <class T> T __shfl_sync(unsigned, T v, int src) {
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    emu::slots[emu::cur] = b;
    emu::warp_barrier();
    uint64_t r = emu::slots[(emu::cur & ~31u) + ((unsigned)src & 31u)];
    emu::warp_barrier();
    T o;
    memcpy(&o, &r, sizeof(T));
    return o;
}
template <class T> T __shfl_xor_sync(unsigned m, T v, int k) {
    return __shfl_sync(m, v, (int)((emu::cur & 31u) ^ (unsigned)k));
}
inline unsigned atomicOr(unsigned* a, unsigned v) { unsigned o = *a; *a = o | v; return o; }
inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) {
    unsigned long long o = *a; if (v < o) *a = v; return o;
}
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
    const uint64_t v = ((uint64_t)hi << 32) | lo;
    return (unsigned)(v >> (shift & 31u));
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
    const uint64_t v = ((uint64_t)hi << 32) | lo;
    return (unsigned)((v << (shift & 31u)) >> 32);
}
template <class T> T __ldg(const T* p) { return *p; }
inline float __expf(float x) { return expf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
