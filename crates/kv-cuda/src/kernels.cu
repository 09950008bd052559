// kv-cuda kernels: CUDA C compiled at run time by NVRTC (see ptx_for in src/launch.rs for the
// options).
//
// Every kernel reproduces, operation for operation, the scalar CPU code of the same codec in
// kv-codec, so that the output bytes (encode) and output bits (decode) are identical. The
// rules that make that true:
//   * compiled with --fmad=false (no contraction of a*b+c), --prec-div=true, --prec-sqrt=true
//     and --ftz=false, so every + - * / sqrt is one IEEE binary32 operation rounded to nearest
//     even, exactly as on the CPU;
//   * rounding to integers is rintf (ties to even), never roundf;
//   * every sum runs in the fixed order the CPU code documents (see sumsq and dist2);
//   * conversions to f16/bf16 are written out on the bit patterns, so they do not depend on
//     header versions or hardware instructions.
//
// Layout of the work: a vector of d values is held by T = d/8 consecutive lanes of a warp,
// lane t holding values 8t..8t+7 in registers (d <= 256, so a vector never spans warps), and
// a warp holds vpw = floor(32/T) vectors. A thread block codes one chunk of P.chunk vectors
// (a multiple of 32: 32 vectors of any bit length end on a 32-bit word boundary, so chunks
// never share an output word). Each chunk's packed bits are assembled in shared memory
// (atomicOr of each field) and written to global memory with coalesced word stores;
// decoders read a chunk into shared memory the same way. Every lane runs every warp collective (shuffles) even when
// it holds no vector, so that the full-mask shuffles are well defined.
//
// The generated prelude (src/source.rs) defines `struct Params` (one 32-bit word per field,
// in the order of the Rust side), the E8 basis of lattice-core and the codec ids.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;

#define FULL_MASK 0xffffffffu

// ---------------------------------------------------------------------------------------------
// Bit patterns and conversions
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float pow2f(int e) { return __uint_as_float((u32)(e + 127) << 23); }

__device__ __forceinline__ bool finite_f(float x) {
    // One comparison (|x| < infinity is false for infinities and NaN), where the exponent
    // test took a logic operation and an integer comparison.
    return fabsf(x) < __uint_as_float(0x7f800000u);
}

__device__ __forceinline__ float saturate_f(float v) {
    const float m = __uint_as_float(0x7f7fffffu);
    return fminf(fmaxf(v, -m), m);
}

// rintf for |x| < 2^22 with two additions (round to nearest, ties to even, as rintf but for
// the sign of a zero), which keeps the conversion units (a quarter of the FMA rate) out of
// the hot loops.
#define RINT_MAGIC 12582912.0f
__device__ __forceinline__ float rint_add(float x) { return (x + RINT_MAGIC) - RINT_MAGIC; }

// An integer-valued v with |v| < 2^22 as a two's complement u32: its bits in v + 1.5 * 2^23.
__device__ __forceinline__ u32 small_int_bits(float v) { return __float_as_uint(v + RINT_MAGIC) - 0x4b400000u; }

__device__ __forceinline__ bool sign_negative(float v) { return (__float_as_uint(v) >> 31) != 0u; }

// IEEE half -> f32, exact.
__device__ __forceinline__ float f16_to_f32(u32 h) {
    const u32 s = (h & 0x8000u) << 16;
    const u32 e = (h >> 10) & 0x1fu;
    const u32 m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, exact in f32.
        const float f = (float)m * pow2f(-24);
        return __uint_as_float(__float_as_uint(f) | s);
    }
    if (e == 31u) return __uint_as_float(s | 0x7f800000u | (m << 13));
    return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}

__device__ __forceinline__ float bf16_to_f32(u32 h) { return __uint_as_float(h << 16); }

// f16_to_f32 for a half that is not infinite or NaN: one conversion instruction on the
// device (exact for every finite half, subnormals included, as f16_to_f32 is).
__device__ __forceinline__ float finite_f16_to_f32(u32 h) {
#if defined(__CUDA_ARCH__)
    float r;
    asm("cvt.f32.f16 %0, %1;\n" : "=f"(r) : "h"((unsigned short)h));
    return r;
#else
    return f16_to_f32(h);
#endif
}

// f32 -> IEEE half, rounded to nearest even (overflow to infinity), as half::f16::from_f32.
__device__ __forceinline__ u32 f32_to_f16(float f) {
    const u32 x = __float_as_uint(f);
    const u32 s = (x >> 16) & 0x8000u;
    const u32 a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return s | 0x7c00u | (a > 0x7f800000u ? 0x200u : 0u);
    // 65520 and above round to infinity.
    if (a >= 0x477ff000u) return s | 0x7c00u;
    if (a >= 0x38800000u) {
        const u32 e = (a >> 23) - 112u;
        const u32 m = a & 0x7fffffu;
        u32 h = (e << 10) | (m >> 13);
        const u32 rest = m & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h += 1u;
        return s | h;
    }
    // Below 2^-25 (and exactly 2^-25, a tie) rounds to zero.
    if (a <= 0x33000000u) return s;
    const u32 ef = a >> 23;
    const u32 sig = (a & 0x7fffffu) | 0x800000u;
    const u32 shift = 126u - ef;
    u32 h = sig >> shift;
    const u32 rest = sig & ((1u << shift) - 1u);
    const u32 half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u))) h += 1u;
    return s | h;
}

// f32 -> bfloat16, rounded to nearest even, as half::bf16::from_f32.
__device__ __forceinline__ u32 f32_to_bf16(float f) {
    const u32 x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return ((x >> 16) | 0x40u) & 0xffffu;
    return ((x + 0x7fffu + ((x >> 16) & 1u)) >> 16) & 0xffffu;
}

// Rounds v >> shift to nearest, ties to even (shift <= 63); kv-codec's rne_shift.
__device__ __forceinline__ u64 rne_shift(u64 v, u32 shift) {
    if (shift == 0u) return v;
    const u64 q = v >> shift;
    const u64 rem = v & ((1ull << shift) - 1ull);
    const u64 half = 1ull << (shift - 1u);
    return (rem > half || (rem == half && (q & 1ull))) ? q + 1ull : q;
}

// floor(log2 m) of a positive finite m (subnormals included); kv-codec's exponent_of.
__device__ __forceinline__ int exponent_of(float m) {
    const u32 bits = __float_as_uint(m);
    const int field = (int)(bits >> 23);
    if (field == 0) return (31 - __clz((int)(bits & 0x7fffffu))) - 149;
    return field - 127;
}

// v * 2^k in steps of representable powers of two; kv-codec's ldexp.
__device__ __forceinline__ float ldexp_steps(float v, int k) {
    while (k > 127) { v = v * pow2f(127); k -= 127; }
    while (k < -126) { v = v * pow2f(-126); k += 126; }
    return v * pow2f(k);
}

// kv-codec's scale::encode: an unsigned f32 with its mantissa rounded to m bits.
__device__ __forceinline__ u32 scale_encode(float v, u32 m) {
    if (!(v > 0.0f)) return 0u;
    const u32 b = __float_as_uint(v);
    const u32 drop = 23u - m;
    u32 rounded = b;
    if (drop != 0u) {
        const u32 half = 1u << (drop - 1u);
        const u32 rest = b & ((1u << drop) - 1u);
        const bool up = rest > half || (rest == half && ((b >> drop) & 1u));
        rounded = ((b >> drop) << drop) + (up ? (1u << drop) : 0u);
    }
    const u32 code = rounded >> drop;
    const u32 top = (0x7f800000u >> drop) - 1u;
    return code < top ? code : top;
}

// kv-codec's scale::decode for a code of the right width: the value (maybe not finite).
__device__ __forceinline__ float scale_value(u32 code, u32 m) { return __uint_as_float(code << (23u - m)); }

// kv-codec's f16x format (baselines): IEEE f16, with the infinity/NaN patterns as an escape.
#define F16X_MAX_ESCAPE ((111u << 3) | 7u)
__device__ __forceinline__ u32 f16x_encode(float v) {
    // On the device one cvt.rn.f16.f32: the same bits as f32_to_f16 for every value but NaN,
    // which comes out as another NaN pattern, and every non-finite result takes the escape
    // below, computed from v.
#if defined(__CUDA_ARCH__)
    unsigned short converted;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(converted) : "f"(v));
    const u32 h = converted;
#else
    const u32 h = f32_to_f16(v);
#endif
    if ((h & 0x7c00u) != 0x7c00u) return h;
    const u32 sign = sign_negative(v) ? 0x8000u : 0u;
    const u32 bits = __float_as_uint(v) & 0x7fffffffu;
    const int exp = (int)(bits >> 23) - 127;
    const int rounded = (int)rne_shift((u64)(bits & 0x7fffffu), 20u);
    int payload = ((exp - 16) << 3) + rounded;
    payload = payload < 0 ? 0 : (payload > (int)F16X_MAX_ESCAPE ? (int)F16X_MAX_ESCAPE : payload);
    return sign | 0x7c00u | (u32)payload;
}
// Returns false for an escape code no encoder writes.
__device__ __forceinline__ bool f16x_decode(u32 code, float* out) {
    if ((code & 0x7c00u) != 0x7c00u) { *out = finite_f16_to_f32(code); return true; }
    const u32 payload = code & 0x3ffu;
    if (payload > F16X_MAX_ESCAPE) return false;
    const int k = (int)(payload >> 3);
    const float m = (float)(payload & 7u);
    const float magnitude = ldexp_steps(1.0f + m / 8.0f, 16 + k);
    *out = (code & 0x8000u) ? -magnitude : magnitude;
    return true;
}

// OCP FP8 E4M3FN, kv-codec's e4m3 module.
__device__ __forceinline__ u32 e4m3_encode(float v) {
    const u32 sign = (__float_as_uint(v) >> 24) & 0x80u;
    const float a = fabsf(v);
    if (a >= 448.0f) return sign | 0x7eu;
    const u32 bits = __float_as_uint(a);
    const int field = (int)(bits >> 23);
    const u64 mantissa = (u64)(bits & 0x7fffffu);
    const int exp = field - 127;
    u64 code;
    if (exp >= -6) {
        code = ((u64)(exp + 7) << 3) + rne_shift(mantissa, 20u);
    } else {
        u64 significand;
        int e;
        if (field == 0) { significand = mantissa; e = -126; } else { significand = mantissa | (1ull << 23); e = exp; }
        const u32 shift = (u32)(14 - e);
        code = shift > 40u ? 0ull : rne_shift(significand, shift);
    }
    return (sign | (u32)code) & 0xffu;
}
// Returns false for the NaN codes.
__device__ __forceinline__ bool e4m3_decode(u32 code, float* out) {
    const int e = (int)((code >> 3) & 0xfu);
    const u32 mb = code & 7u;
    if (e == 15 && mb == 7u) return false;
    const float m = (float)mb;
    const float magnitude = e == 0 ? m * pow2f(-9) : (8.0f + m) * pow2f(e - 10);
    *out = (code & 0x80u) ? -magnitude : magnitude;
    return true;
}

// ---------------------------------------------------------------------------------------------
// Lanes, loads and stores
// ---------------------------------------------------------------------------------------------

struct Lane {
    u32 lane;  // lane in the warp
    u32 warp;  // warp in the block
    u32 seg;   // vector slot of the warp
    u32 t;     // thread within the vector: values 8t..8t+7
    u32 base;  // lane of t = 0
    bool slot; // seg < vpw (lanes past the last slot hold no vector)
};

__device__ __forceinline__ Lane lane_of(const Params& P) {
    Lane L;
    L.lane = threadIdx.x & 31u;
    L.warp = threadIdx.x >> 5;
    L.seg = L.lane / P.t_per_vec;
    L.t = L.lane % P.t_per_vec;
    L.base = L.seg * P.t_per_vec;
    L.slot = L.seg < P.vpw;
    return L;
}

__device__ __forceinline__ float shfl_f(float v, u32 src) { return __shfl_sync(FULL_MASK, v, (int)(src & 31u)); }
__device__ __forceinline__ u32 shfl_u(u32 v, u32 src) { return __shfl_sync(FULL_MASK, v, (int)(src & 31u)); }
__device__ __forceinline__ float shfl_xor_f(float v, u32 k) { return __shfl_xor_sync(FULL_MASK, v, (int)k); }

// Loads the 8 values of lane t of vector v as f32 (zeros when inactive).
__device__ __forceinline__ void load8(const Params& P, const void* src, u64 v, u32 t, bool active, float x[8]) {
    for (int j = 0; j < 8; ++j) x[j] = 0.0f;
    if (!active) return;
    const u64 off = v * (u64)P.d + 8ull * t;
    if (P.dtype == DTYPE_F32) {
        const float4* p = (const float4*)((const float*)src + off);
        const float4 a = p[0];
        const float4 b = p[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
        x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else {
        const uint4 w = *(const uint4*)((const u16*)src + off);
        const u32 words[4] = {w.x, w.y, w.z, w.w};
        for (int j = 0; j < 4; ++j) {
            const u32 lo = words[j] & 0xffffu;
            const u32 hi = words[j] >> 16;
            if (P.dtype == DTYPE_F16) { x[2 * j] = f16_to_f32(lo); x[2 * j + 1] = f16_to_f32(hi); }
            else { x[2 * j] = bf16_to_f32(lo); x[2 * j + 1] = bf16_to_f32(hi); }
        }
    }
}

// Two values as f16 (`f16`) or bf16, `lo` in the low half, rounded to nearest even as
// f32_to_f16 and f32_to_bf16 round them. On sm_80 and later one cvt.rn.{f16,bf16}x2.f32
// converts both, which gives the same bits for every value but NaN (the instruction makes a
// NaN canonical, the functions keep what the CPU keeps), so NaNs take the functions.
__device__ __forceinline__ u32 pack2_half(bool f16, float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (lo == lo && hi == hi) {
        u32 r;
        if (f16) asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        else asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        return r;
    }
#endif
    return f16 ? f32_to_f16(lo) | (f32_to_f16(hi) << 16) : f32_to_bf16(lo) | (f32_to_bf16(hi) << 16);
}

// Stores the 8 values of lane t of vector v in the output dtype.
__device__ __forceinline__ void store8(const Params& P, void* dst, u64 v, u32 t, const float y[8]) {
    const u64 off = v * (u64)P.d + 8ull * t;
    if (P.dtype == DTYPE_F32) {
        float4* p = (float4*)((float*)dst + off);
        float4 a, b;
        a.x = y[0]; a.y = y[1]; a.z = y[2]; a.w = y[3];
        b.x = y[4]; b.y = y[5]; b.z = y[6]; b.w = y[7];
        p[0] = a;
        p[1] = b;
    } else {
        u32 words[4];
        for (int j = 0; j < 4; ++j) words[j] = pack2_half(P.dtype == DTYPE_F16, y[2 * j], y[2 * j + 1]);
        uint4 w;
        w.x = words[0]; w.y = words[1]; w.z = words[2]; w.w = words[3];
        *(uint4*)((u16*)dst + off) = w;
    }
}

// Records a fault: the smallest key over the launch wins, so the host sees the first vector
// (then the first field in bit order) at fault, as the CPU reports it.
__device__ __forceinline__ void fault(u64* status, u64 vector, u32 bitpos, u32 reason) {
    atomicMin(status, (vector << 32) | ((u64)(bitpos & 0xffffffu) << 8) | (u64)reason);
}

__device__ __forceinline__ bool all_finite8(const float x[8]) {
    bool ok = true;
    for (int j = 0; j < 8; ++j) ok = ok && finite_f(x[j]);
    return ok;
}

// ---------------------------------------------------------------------------------------------
// Packed bits in shared memory (LSB first: bit k is bit k%8 of byte k/8)
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ u32 low_mask(u32 n) { return n >= 32u ? 0xffffffffu : ((1u << n) - 1u); }

// ORs the low nbits (<= 64) of val into buf at bit pos: the field spans at most three words,
// whose parts come from two funnel shifts (no loop); parts with no bits set are skipped.
__device__ __forceinline__ void put_bits(u32* buf, u32 pos, u64 val, u32 nbits) {
    if (nbits < 64u) val &= (1ull << nbits) - 1ull;
    const u32 i = pos >> 5;
    const u32 off = pos & 31u;
    const u32 lo = (u32)val;
    const u32 hi = (u32)(val >> 32);
    const u32 w0 = lo << off;
    const u32 w1 = __funnelshift_l(lo, hi, off);
    const u32 w2 = __funnelshift_l(hi, 0u, off);
    if (w0 != 0u) atomicOr(&buf[i], w0);
    if (w1 != 0u) atomicOr(&buf[i + 1u], w1);
    if (w2 != 0u) atomicOr(&buf[i + 2u], w2);
}

__device__ __forceinline__ u64 get_bits(const u32* buf, u32 pos, u32 nbits) {
    // Any field of at most 64 bits lies within the three words from the one holding its first
    // bit: two funnel shifts and a mask, no loop. The words after a field's last may be read
    // but are masked off; every buffer the kernels read fields from is in shared memory
    // with at least two words after its last field (a chunk's bits are followed by the warps'
    // scratch).
    const u32 i = pos >> 5;
    const u32 off = pos & 31u;
    const u32 w1 = buf[i + 1u];
    const u64 v = (u64)__funnelshift_r(buf[i], w1, off) | ((u64)__funnelshift_r(w1, buf[i + 2u], off) << 32);
    return nbits >= 64u ? v : v & ((1ull << nbits) - 1ull);
}

// Words of one chunk's packed bits (P.chunk is a multiple of 32 vectors).
__device__ __forceinline__ u32 chunk_words(const Params& P) { return (P.chunk >> 5) * P.bits; }

// Byte range of chunk `chunk` in a batch of P.n vectors: [start, end).
__device__ __forceinline__ void chunk_bytes(const Params& P, u32 chunk, u64* start, u64* end) {
    const u64 total = ((u64)P.n * (u64)P.bits + 7ull) >> 3;
    *start = (u64)chunk * 4ull * (u64)chunk_words(P);
    u64 e = *start + 4ull * (u64)chunk_words(P);
    *end = e < total ? e : total;
}

// Per-warp scratch in shared memory, after the chunk's packed bits: 32 lanes x 8 floats
// (squares for sumsq, then the blocks' z for the overload tasks), then 32 task slots of
// four words (task, error, index low, index high).
#define SCRATCH_WORDS_PER_WARP (32u * 8u + 32u * 4u)
__device__ __forceinline__ float* warp_vals(const Params& P, u32* smem, const Lane& L) {
    return (float*)(smem + chunk_words(P) + L.warp * SCRATCH_WORDS_PER_WARP);
}
__device__ __forceinline__ u32* warp_slots(const Params& P, u32* smem, const Lane& L) {
    return smem + chunk_words(P) + L.warp * SCRATCH_WORDS_PER_WARP + 32u * 8u;
}

__device__ __forceinline__ void zero_words(u32* buf, u32 words) {
    for (u32 i = threadIdx.x; i < words; i += blockDim.x) buf[i] = 0u;
}

__device__ __forceinline__ void store_chunk(const Params& P, const u32* buf, unsigned char* out, u32 chunk) {
    u64 start, end;
    chunk_bytes(P, chunk, &start, &end);
    const u32 words = (u32)((end - start) >> 2);
    const u32 tail = (u32)((end - start) & 3ull);
    u32* o = (u32*)(out + start);
    for (u32 i = threadIdx.x; i < words; i += blockDim.x) o[i] = buf[i];
    if (threadIdx.x < tail) out[start + 4ull * words + threadIdx.x] = (unsigned char)(buf[words] >> (8u * threadIdx.x));
}

// 16 bytes from global to shared memory, asynchronously where the hardware can (cp.async,
// sm_80 and later; the host emulation copies at once).
__device__ __forceinline__ void copy16_async(u32* dst, const u32* src) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const u32 a = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
#else
    dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2]; dst[3] = src[3];
#endif
}
__device__ __forceinline__ void async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Waits until at most `pending` (0 or 1) committed groups are still in flight.
__device__ __forceinline__ void async_wait(u32 pending) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (pending == 0u) asm volatile("cp.async.wait_group 0;\n" ::);
    else asm volatile("cp.async.wait_group 1;\n" ::);
#endif
}

// Loads a chunk's packed bits into `buf` (zeros after its last byte, up to chunk_words).
// Where the chunk starts on a 16-byte boundary (every chunk of 128 vectors, and of 32 when
// their bits are a multiple of 4) its whole 16-byte units are copied asynchronously, so
// that each thread has all its copies in flight at once rather than one word at a time
// (the load is what bounds a decoder: its packed input is read before any value is
// written); the rest, word by word.
__device__ __forceinline__ void load_chunk(const Params& P, const unsigned char* in, u32* buf, u32 chunk) {
    u64 start, end;
    chunk_bytes(P, chunk, &start, &end);
    const u32 words = (u32)((end - start) >> 2);
    const u32 tail = (u32)((end - start) & 3ull);
    const u32* src = (const u32*)(in + start);
    u32 copied = 0u;
    if (((unsigned long long)src & 15ull) == 0ull) {
        const u32 units = words >> 2;
        for (u32 i = threadIdx.x; i < units; i += blockDim.x) copy16_async(buf + 4u * i, src + 4u * i);
        async_commit();
        copied = 4u * units;
    }
    for (u32 i = copied + threadIdx.x; i < chunk_words(P); i += blockDim.x) buf[i] = i < words ? src[i] : 0u;
    async_wait(0u);
    __syncthreads();
    if (threadIdx.x == 0u && tail != 0u) {
        u32 w = 0u;
        for (u32 b = 0u; b < tail; ++b) w |= (u32)in[start + 4ull * words + b] << (8u * b);
        buf[words] = w;
    }
    __syncthreads();
}

// ---------------------------------------------------------------------------------------------
// Reductions in the CPU's fixed orders
// ---------------------------------------------------------------------------------------------

// kv-codec's sum_of_squares: lane j of eight adds the squares of the values at i = j mod 8 in
// increasing i (here: over the vector's threads in order), then
// ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). The squares go through the warp's
// scratch, each of the eight running sums is kept by one thread, and every thread of the
// vector gets the result. All lanes of the warp must call it.
__device__ __forceinline__ float sumsq(const Params& P, const Lane& L, float* vals, const float v[8]) {
    if (L.slot) {
        for (int j = 0; j < 8; ++j) vals[L.lane * 8u + (u32)j] = v[j] * v[j];
    }
    __syncwarp();
    if (L.slot) {
        for (u32 j = L.t; j < 8u; j += P.t_per_vec) {
            float acc = 0.0f;
            for (u32 s = 0u; s < P.t_per_vec; ++s) acc = acc + vals[(L.base + s) * 8u + j];
            // Column j is read by this thread alone, so its first row can take the sum.
            vals[L.base * 8u + j] = acc;
        }
    }
    __syncwarp();
    float l[8];
    for (int j = 0; j < 8; ++j) l[j] = L.slot ? vals[L.base * 8u + (u32)j] : 0.0f;
    __syncwarp();
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

// Largest magnitude over `threads` consecutive threads starting at thread `first` of the
// vector (max is exact, so any order gives the CPU's fold).
__device__ __forceinline__ float absmax_threads(const Params& P, const Lane& L, const float v[8], u32 first, u32 threads) {
    float m = 0.0f;
    for (int j = 0; j < 8; ++j) m = fmaxf(m, fabsf(v[j]));
    // A maximum of magnitudes is exact in any order. When every group of `threads` lanes is
    // a power of two starting on a multiple of it (the same for the whole warp, from P
    // alone), a butterfly takes log2(threads) shuffles; otherwise one per lane.
    if ((threads & (threads - 1u)) == 0u && P.t_per_vec % threads == 0u) {
        // Unrolled over every possible step (threads is at most 32), each taken or not as a
        // whole warp: no loop branches.
        #pragma unroll
        for (u32 s = 1u; s < 32u; s <<= 1) {
            if (s < threads) m = fmaxf(m, shfl_xor_f(m, s));
        }
        return m;
    }
    float r = 0.0f;
    for (u32 s = 0u; s < threads; ++s) r = fmaxf(r, shfl_f(m, L.base + first + s));
    return r;
}

// ---------------------------------------------------------------------------------------------
// The orthonormal Walsh-Hadamard transform of the hadamard crate (its scalar tier's order)
// ---------------------------------------------------------------------------------------------

// Butterflies of strides 1, 2, 4, ..., p/2 on each row, then the mixing table (which carries
// the 1/sqrt normalisation). `masks` (d words) are XORed into the sign bits before (forward)
// or after (inverse) when non-null.
__device__ __forceinline__ void fwht(const Params& P, const Lane& L, const u32* tab, float v[8], bool forward, bool with_signs) {
    const u32* masks = tab + P.off_masks;
    const float* mix = (const float*)(tab + P.off_mix);
    if (with_signs && forward) {
        for (int j = 0; j < 8; ++j) v[j] = __uint_as_float(__float_as_uint(v[j]) ^ masks[8u * L.t + j]);
    }
    for (int h = 1; h < 8; h <<= 1) {
        for (int j = 0; j < 8; ++j) {
            if ((j & h) == 0) {
                const float a = v[j];
                const float b = v[j + h];
                v[j] = a + b;
                v[j + h] = a - b;
            }
        }
    }
    const u32 pt = P.p >> 3;  // threads per row
    const u32 c = L.t % pt;   // thread within the row
    for (u32 k = 1u; k < pt; k <<= 1) {
        for (int j = 0; j < 8; ++j) {
            const float o = shfl_xor_f(v[j], k);
            // The lower thread holds a = x[i], the upper b = x[i + h]: (a + b, a - b).
            v[j] = (c & k) ? (o - v[j]) : (v[j] + o);
        }
    }
    if (P.m == 1u) {
        const float w = mix[0];
        for (int j = 0; j < 8; ++j) v[j] = v[j] * w;
    } else {
        // y[r*p + c] = ((W[r][0]*u_0 + W[r][1]*u_1) + ...), u_s from the same column of row s.
        const u32 r = L.t / pt;
        float acc[8];
        for (u32 s = 0u; s < P.m; ++s) {
            const float w = mix[r * P.m + s];
            for (int j = 0; j < 8; ++j) {
                const float u = shfl_f(v[j], L.base + s * pt + c);
                acc[j] = s == 0u ? w * u : acc[j] + w * u;
            }
        }
        for (int j = 0; j < 8; ++j) v[j] = acc[j];
    }
    if (with_signs && !forward) {
        for (int j = 0; j < 8; ++j) v[j] = __uint_as_float(__float_as_uint(v[j]) ^ masks[8u * L.t + j]);
    }
}

// ---------------------------------------------------------------------------------------------
// Lattices (lattice-core's decoders and tie rules)
// ---------------------------------------------------------------------------------------------

// Nearest point of D_n (n <= 8) in [lo, hi]^n (integer or infinite bounds): round every
// coordinate into the box; if the sum is odd, move the coordinate where that costs least to
// its alternative (largest key; the lowest index among equals). BOUNDED = false is the
// unbounded decoder for finite x (the bounds infinite): every clamp and bound test is then a
// no-op, and left out.
template <bool BOUNDED>
__device__ __forceinline__ void dn_nearest(const float* x, float* r, int n, float lo, float hi) {
    float alt[8], key[8];
    int sum = 0;
    for (int i = 0; i < n; ++i) {
        const float xi = x[i];
        const float ri = rintf(BOUNDED ? fminf(fmaxf(xi, lo), hi) : xi);
        const float err = xi - ri;
        const bool want_up = err >= 0.0f;
        const bool go_up = BOUNDED ? (want_up && (ri + 1.0f <= hi)) || (ri - 1.0f < lo) : want_up;
        alt[i] = go_up ? ri + 1.0f : ri - 1.0f;
        key[i] = (go_up == want_up) ? fabsf(err) : -fabsf(err);
        r[i] = ri;
    }
    for (int i = 0; i < n; ++i) sum += (int)r[i];
    // The first index of the largest key; selects instead of indexing by `flip`, so that the
    // arrays stay in registers.
    int flip = 0;
    float best = key[0];
    for (int i = 1; i < n; ++i) {
        if (key[i] > best) { best = key[i]; flip = i; }
    }
    if (sum & 1) {
        for (int i = 0; i < n; ++i) r[i] = i == flip ? alt[i] : r[i];
    }
}

__device__ __forceinline__ float dist2(const float* a, const float* b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; ++i) {
        const float d = a[i] - b[i];
        s = s + d * d;
    }
    return s;
}

// Nearest point of E8 in [lo, hi]^8: the nearer of the D8 point and the shifted D8 point of
// x - 1/2 (in [lo, hi - 1]); the integer coset wins exact ties.
template <bool BOUNDED>
__device__ __forceinline__ void e8_nearest(const float x[8], float out[8], float lo, float hi) {
    float p0[8], p1[8], s[8];
    dn_nearest<BOUNDED>(x, p0, 8, lo, hi);
    for (int i = 0; i < 8; ++i) s[i] = x[i] - 0.5f;
    dn_nearest<BOUNDED>(s, p1, 8, lo, hi - 1.0f);
    for (int i = 0; i < 8; ++i) p1[i] = p1[i] + 0.5f;
    const bool half = dist2(x, p1, 8) < dist2(x, p0, 8);
    for (int i = 0; i < 8; ++i) out[i] = half ? p1[i] : p0[i];
}

// The nearest E8 point of a finite x.
__device__ __forceinline__ void e8_closest(const float x[8], float out[8]) { e8_nearest<false>(x, out, 0.0f, 0.0f); }

// ---------------------------------------------------------------------------------------------
// The Voronoi codebook E8/qE8 (lattice-core's VoronoiCodebook)
// ---------------------------------------------------------------------------------------------

// Basis coordinates of the E8 point `lam`, reduced mod q.
// The fields of Params that coset_coords and point_of_coords read (either takes a Params or
// this), which the out-of-line boundary test receives by value.
struct VoronoiQ {
    u32 q, q_pow2;
    float qf, inv_q;
};

// The loops are unrolled so that the arrays stay in registers and the basis's zeros fold
// away (inside the out-of-line boundary test they were not, and went through local memory).
template <class Q>
__device__ __forceinline__ void coset_coords(const Q& P, const float lam[8], u32 c[8]) {
    int tw[8], cc[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) tw[i] = (int)(lam[i] * 2.0f);
    #pragma unroll
    for (int j = 7; j >= 0; --j) {
        int rest = tw[j];
        #pragma unroll
        for (int i = j + 1; i < 8; ++i) rest -= cc[i] * E8_BASIS_TWICE[i][j];
        cc[j] = rest >> E8_DIAG_SHIFT[j];
    }
    const int q = (int)P.q;
    if (P.q_pow2) {
        #pragma unroll
        for (int i = 0; i < 8; ++i) c[i] = (u32)(cc[i] & (q - 1));
    } else {
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            const int r = cc[i] % q;
            c[i] = (u32)(r < 0 ? r + q : r);
        }
    }
}

// The codebook point of the coset with coordinates c: lambda - q * Q_E8(lambda / q).
template <class Q>
__device__ __forceinline__ void point_of_coords(const Q& P, const u32 c[8], float out[8]) {
    int tw[8];
    #pragma unroll
    for (int j = 0; j < 8; ++j) tw[j] = 0;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        #pragma unroll
        for (int j = 0; j <= i; ++j) tw[j] += (int)c[i] * E8_BASIS_TWICE[i][j];
    }
    float lam[8], sc[8], ce[8];
    #pragma unroll
    for (int j = 0; j < 8; ++j) lam[j] = (float)tw[j] * 0.5f;
    #pragma unroll
    for (int j = 0; j < 8; ++j) sc[j] = P.q_pow2 ? lam[j] * P.inv_q : lam[j] / P.qf;
    e8_closest(sc, ce);
    #pragma unroll
    for (int j = 0; j < 8; ++j) out[j] = lam[j] - P.qf * ce[j];
}

__device__ __forceinline__ u64 pack_index(const Params& P, const u32 c[8]) {
    u64 index = 0ull;
    for (int i = 7; i >= 0; --i) index = index * (u64)P.q + (u64)c[i];
    return index;
}

// lattice-core's E8::cell_gauge: the largest 2<x, r>/|r|^2 over the Voronoi-relevant vectors
// r, so that x lies inside the cell of qE8 when it is below q and outside when above. Exact
// for half-integer points (sums of a few half-integers); for other inputs a bound's estimate.
__device__ __forceinline__ float e8_gauge(const float x[8]) {
    float a1 = 0.0f, a2 = 0.0f, sum = 0.0f, smallest = __uint_as_float(0x7f800000u);
    u32 negatives = 0u;
    for (int i = 0; i < 8; ++i) {
        const float a = fabsf(x[i]);
        const bool above_first = a > a1;
        a2 = above_first ? a1 : (a > a2 ? a : a2);
        a1 = above_first ? a : a1;
        sum = sum + a;
        smallest = fminf(smallest, a);
        negatives += x[i] < 0.0f ? 1u : 0u;
    }
    const float half = 0.5f * ((negatives & 1u) ? sum - 2.0f * smallest : sum);
    return fmaxf(a1 + a2, half);
}

// Whether the coset's codebook point of the E8 point lam is lam itself (lam on the boundary
// of the cell of qE8: rare per block, but ncu counts about eight per warp of the encoder):
// out of line, so that the callers' loops stay small enough for the instruction cache.
__device__ __noinline__ bool is_own_representative(u32 q, u32 q_pow2, float qf, float inv_q, float l0, float l1,
                                                   float l2, float l3, float l4, float l5, float l6, float l7) {
    // Scalars, not a Params reference and an array: an out-of-line function's reference and
    // array arguments go through local memory.
    const VoronoiQ V = {q, q_pow2, qf, inv_q};
    const float lam[8] = {l0, l1, l2, l3, l4, l5, l6, l7};
    u32 c[8];
    float pt[8];
    coset_coords(V, lam, c);
    point_of_coords(V, c, pt);
    bool same = true;
    #pragma unroll
    for (int i = 0; i < 8; ++i) same = same && (pt[i] == lam[i]);
    return same;
}

// lattice-core's VoronoiCodebook::is_codeword for an E8 point: inside the cell of qE8 by its
// gauge; on the cell's boundary, when the coset's codebook point is the point itself.
__device__ __forceinline__ bool is_codeword(const Params& P, const float lam[8]) {
    const float g = e8_gauge(lam);
    if (g != P.qf) return g < P.qf;
    return is_own_representative(P.q, P.q_pow2, P.qf, P.inv_q, lam[0], lam[1], lam[2], lam[3], lam[4], lam[5], lam[6], lam[7]);
}

// Whether the nearest E8 point of y is a codeword, as is_codeword(e8_closest(y)) answers, or
// -1 where y's gauge does not settle it. The gauge is a norm whose unit ball is the Voronoi
// cell of E8, and y minus its nearest point lies in that cell, so the point's gauge is within
// 1 of y's: below q - 1 the point is inside the cell of qE8, above q + 1 outside. The margin
// covers the rounding of y's gauge (a sum of eight terms).
__device__ __forceinline__ int codeword_by_gauge(const Params& P, const float y[8]) {
    const float g = e8_gauge(y);
    if (g * 1.0001f < P.qf - 1.0f) return 1;
    if (g * 0.9999f > P.qf + 1.0f) return 0;
    return -1;
}

// kv-codec's clip_into_cell for a block whose nearest point (t = 1) is not a codeword: the
// nearest point of t*v for the largest t on a grid of 1/2^8, found by bisection, whose
// nearest point is one (t = 0 always is). Each step decides by t*v's gauge where that
// settles the question, and decodes only near the cell's boundary; the point of the final
// t (the last step that found a codeword) is decoded once at the end, from the same inputs.
__device__ __forceinline__ void bisect_to_cell(const Params& P, const float v[8], float pt[8]) {
    float lo = 0.0f, hi = 1.0f;
    float s[8];
#pragma unroll 1
    for (int it = 0; it < 8; ++it) {
        const float mid = 0.5f * (lo + hi);
        for (int i = 0; i < 8; ++i) s[i] = v[i] * mid;
        int inside = codeword_by_gauge(P, s);
        if (inside < 0) {
            float lam[8];
            e8_closest(s, lam);
            inside = is_codeword(P, lam) ? 1 : 0;
        }
        if (inside) lo = mid; else hi = mid;
    }
    for (int i = 0; i < 8; ++i) s[i] = v[i] * lo;
    e8_closest(s, pt);
    // t = 0: the origin (+0 coordinates, whatever the signs of v).
    for (int i = 0; i < 8; ++i) pt[i] = lo > 0.0f ? pt[i] : 0.0f;
}

// The coset index sum c_i q^i of an E8 point.
__device__ __forceinline__ u64 index_of_point(const Params& P, const float lam[8]) {
    u32 c[8];
    coset_coords(P, lam, c);
    return pack_index(P, c);
}

__device__ __forceinline__ float alpha_of(const Params& P, u32 j) {
    return j == 0u ? P.alpha0 : (j == 1u ? P.alpha1 : (j == 2u ? P.alpha2 : P.alpha3));
}

// Squared error of z against alpha * pt, summed in index order.
__device__ __forceinline__ float block_error(const float z[8], float a, const float pt[8]) {
    float err = 0.0f;
    for (int i = 0; i < 8; ++i) {
        const float e = z[i] - a * pt[i];
        err = err + e * e;
    }
    return err;
}

// Inclusive prefix sum over the warp's lanes.
__device__ __forceinline__ u32 warp_inclusive_sum(u32 x, u32 lane) {
    for (u32 k = 1u; k < 32u; k <<= 1) {
        const u32 o = shfl_u(x, lane - k);
        if (lane >= k) x += o;
    }
    return x;
}

// kv-codec's choose for the block z of every lane of the warp (all lanes call it): the scale
// choice with the least squared error (the least choice on ties), and its coset index
// sum c_i q^i. A choice whose nearest point is not a codeword is clipped into the cell
// (up to nine more decodes) only if a lower bound on its clipped error does not already lose to
// the best unclipped choice: the clipped point lies inside the cell, so its error is at least
// the unclipped point's and at least the distance to the cell (from the gauge of z/alpha).
// Only choices that cannot win are skipped, so the result is that of clipping every one, as
// on the CPU. The clippings left are shared out over the warp's lanes, so that a warp pays
// for them in proportion to their number rather than whenever any one lane has one.
__device__ __forceinline__ void voronoi_block(const Params& P, const Lane& L, u32* smem, const float z[8], u32* choice, u64* index) {
    float best = __uint_as_float(0x7f800000u), best_pt[8];
    u32 best_j = 0u;
    float bounds[4];
    u32 pending = 0u;
    for (int i = 0; i < 8; ++i) best_pt[i] = 0.0f;
#pragma unroll 1
    for (u32 j = 0u; j < 4u; ++j) {
        bounds[j] = 0.0f;
        if (j < P.scales) {
            const float a = alpha_of(P, j);
            float v[8], lam[8];
            for (int i = 0; i < 8; ++i) v[i] = z[i] / a;
            e8_closest(v, lam);
            const float err = block_error(z, a, lam);
            if (is_codeword(P, lam)) {
                // Increasing j: a strict < keeps the least choice on ties.
                if (err < best) {
                    best = err;
                    best_j = j;
                    for (int i = 0; i < 8; ++i) best_pt[i] = lam[i];
                }
            } else {
                // Each facet of the cell of qE8 is {<x, r> = q} for a root r of norm sqrt 2.
                const float beyond = fmaxf(e8_gauge(v) - P.qf, 0.0f) * 0.70710678118654752f;
                bounds[j] = fmaxf(err, a * a * beyond * beyond);
                pending |= 1u << j;
            }
        }
    }
    // The margin covers f32 rounding in the bound and in the errors compared.
    float zz = 0.0f;
    for (int i = 0; i < 8; ++i) zz = zz + z[i] * z[i];
    for (u32 j = 0u; j < 4u; ++j) {
        if ((pending & (1u << j)) && bounds[j] * (1.0f - 1e-4f) - 1e-6f * zz > best) pending &= ~(1u << j);
    }
    u64 best_index = index_of_point(P, best_pt);
    // Lanes without a vector have z = 0, whose nearest point is a codeword: never pending.
    const u32 count = (u32)__popc(pending);
    const u32 inclusive = warp_inclusive_sum(count, L.lane);
    const u32 first = inclusive - count;
    const u32 total = shfl_u(inclusive, 31u);
    float* vals = warp_vals(P, smem, L);
    u32* slots = warp_slots(P, smem, L);
    if (total > 0u) {
        for (int i = 0; i < 8; ++i) vals[L.lane * 8u + (u32)i] = z[i];
        __syncwarp();
    }
    for (u32 r0 = 0u; r0 < total; r0 += 32u) {
        // Owners post this round's tasks: task k of the warp goes to lane k - r0.
        u32 k = first;
        for (u32 j = 0u; j < 4u; ++j) {
            if (pending & (1u << j)) {
                if (k >= r0 && k < r0 + 32u) slots[4u * (k - r0)] = (L.lane << 2) | j;
                ++k;
            }
        }
        __syncwarp();
        if (r0 + L.lane < total) {
            const u32 task = slots[4u * L.lane];
            const u32 owner = task >> 2;
            const float a = alpha_of(P, task & 3u);
            float zo[8], v[8], pt[8];
            for (int i = 0; i < 8; ++i) { zo[i] = vals[owner * 8u + (u32)i]; v[i] = zo[i] / a; }
            bisect_to_cell(P, v, pt);
            const u64 idx = index_of_point(P, pt);
            slots[4u * L.lane + 1u] = __float_as_uint(block_error(zo, a, pt));
            slots[4u * L.lane + 2u] = (u32)idx;
            slots[4u * L.lane + 3u] = (u32)(idx >> 32);
        }
        __syncwarp();
        k = first;
        for (u32 j = 0u; j < 4u; ++j) {
            if (pending & (1u << j)) {
                if (k >= r0 && k < r0 + 32u) {
                    const u32 at = 4u * (k - r0);
                    const float err = __uint_as_float(slots[at + 1u]);
                    if (err < best || (err == best && j < best_j)) {
                        best = err;
                        best_j = j;
                        best_index = (u64)slots[at + 2u] | ((u64)slots[at + 3u] << 32);
                    }
                }
                ++k;
            }
        }
        __syncwarp();
    }
    *choice = best_j;
    *index = best_index;
}

// ---------------------------------------------------------------------------------------------
// Joint (mixed-radix) indices as little-endian 32-bit limbs, with radices below 2^32
// ---------------------------------------------------------------------------------------------

#define MAX_JOINT_WORDS 80u

__device__ __forceinline__ void limbs_mul_add(u32* w, u32 words, u32 radix, u32 add) {
    u64 carry = add;
    for (u32 i = 0u; i < words; ++i) {
        const u64 t = (u64)w[i] * (u64)radix + carry;
        w[i] = (u32)t;
        carry = t >> 32;
    }
}

__device__ __forceinline__ u32 limbs_div_rem(u32* w, u32 words, u32 radix) {
    u64 rem = 0ull;
    for (int i = (int)words - 1; i >= 0; --i) {
        const u64 cur = (rem << 32) | (u64)w[i];
        w[i] = (u32)(cur / radix);
        rem = cur % radix;
    }
    return (u32)rem;
}

// ---------------------------------------------------------------------------------------------
// Voronoi E8 codec (kv-codec's codecs/voronoi.rs)
// ---------------------------------------------------------------------------------------------

#define VORONOI_SCALE_BITS 11u
#define VORONOI_SCALE_MANTISSA 3u

extern "C" __global__ void kvc_voronoi_encode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    zero_words(smem, chunk_words(P));
    __syncthreads();
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        float x[8];
        load8(P, src, v, L.t, active, x);
        if (active && !all_finite8(x)) fault(status, v, 0u, 0u);
        // safe_prescale: an exact power of two that keeps sums and butterflies finite.
        const float m = absmax_threads(P, L, x, 0u, P.t_per_vec);
        const float k = m > pow2f(60) ? pow2f(-70) : ((m > 0.0f && m < pow2f(-60)) ? pow2f(70) : 1.0f);
        for (int j = 0; j < 8; ++j) x[j] = x[j] * k;
        fwht(P, L, tab, x, true, true);
        const float rms = sqrtf(sumsq(P, L, warp_vals(P, smem, L), x) / (float)P.d);
        const u32 code = scale_encode(rms / P.fill_q / k, VORONOI_SCALE_MANTISSA);
        const float sigma = scale_value(code, VORONOI_SCALE_MANTISSA) * k;
        float z[8];
        for (int j = 0; j < 8; ++j) z[j] = sigma > 0.0f ? x[j] / sigma : 0.0f;
        u32 choice;
        u64 index;
        voronoi_block(P, L, smem, z, &choice, &index);
        // The coset coordinates back from the index sum c_i q^i.
        u32 c[8];
        const u32 lq = (u32)(__ffs((int)P.q) - 1);
        for (int i = 0; i < 8; ++i) {
            if (P.q_pow2) {
                c[i] = (u32)(index >> ((u32)i * lq)) & (P.q - 1u);
            } else {
                c[i] = (u32)(index % P.q);
                index /= P.q;
            }
        }
        const u32 pos = lv * P.bits;
        if (!P.joint) {
            if (active) {
                if (L.t == 0u) put_bits(smem, pos, code, VORONOI_SCALE_BITS);
                const u32 at = pos + VORONOI_SCALE_BITS + L.t * (P.choice_bits + P.index_bits);
                put_bits(smem, at, choice, P.choice_bits);
                // Coordinate i of the coset takes bits i*log2(q) .. of the index: for a power
                // of two q the index sum c_i q^i is those bits already (index_bits = 8 log2 q
                // <= 64), written at once.
                put_bits(smem, at + P.choice_bits, index, P.index_bits);
            }
        } else {
            // Digits (choice_0, index_0, choice_1, ...) with index_b = sum c_i q^i: Horner from
            // the most significant digit, one radix-q step per coordinate.
            u32 w[MAX_JOINT_WORDS];
            for (u32 i = 0u; i < P.joint_words; ++i) w[i] = 0u;
            for (int b = (int)P.t_per_vec - 1; b >= 0; --b) {
                u32 cb[8];
                for (int i = 0; i < 8; ++i) cb[i] = shfl_u(c[i], L.base + (u32)b);
                const u32 chb = shfl_u(choice, L.base + (u32)b);
                if (L.t == 0u) {
                    for (int i = 7; i >= 0; --i) limbs_mul_add(w, P.joint_words, P.q, cb[i]);
                    limbs_mul_add(w, P.joint_words, P.scales, chb);
                }
            }
            if (active && L.t == 0u) {
                put_bits(smem, pos, code, VORONOI_SCALE_BITS);
                u32 left = P.joint_bits;
                for (u32 i = 0u; left > 0u; ++i) {
                    const u32 take = left < 32u ? left : 32u;
                    put_bits(smem, pos + VORONOI_SCALE_BITS + 32u * i, w[i] & low_mask(take), take);
                    left -= take;
                }
            }
        }
    }
    __syncthreads();
    store_chunk(P, smem, (unsigned char*)dst, chunk);
}

#define FAULT_SCALE_NOT_FINITE 1u
#define FAULT_JOINT_RANGE 2u

extern "C" __global__ void kvc_voronoi_decode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    load_chunk(P, (const unsigned char*)src, smem, chunk);
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        const u32 pos = lv * P.bits;
        const u32 code = active ? (u32)get_bits(smem, pos, VORONOI_SCALE_BITS) : 0u;
        float sigma = scale_value(code, VORONOI_SCALE_MANTISSA);
        if (!finite_f(sigma)) {
            if (active && L.t == 0u) fault(status, v, 0u, FAULT_SCALE_NOT_FINITE);
            sigma = 0.0f;
        }
        // Huge vectors are rebuilt at a reduced scale and scaled back (exact powers of two).
        const float k = sigma > pow2f(60) ? pow2f(-70) : 1.0f;
        sigma = sigma * k;
        u32 choice = 0u, c[8];
        if (!P.joint) {
            const u32 at = pos + VORONOI_SCALE_BITS + L.t * (P.choice_bits + P.index_bits);
            if (active) choice = (u32)get_bits(smem, at, P.choice_bits);
            const u64 index = active ? get_bits(smem, at + P.choice_bits, P.index_bits) : 0ull;
            for (int i = 0; i < 8; ++i) c[i] = (u32)(index >> ((u32)i * P.log2q)) & low_mask(P.log2q);
        } else {
            u32 w[MAX_JOINT_WORDS];
            bool bad = false;
            if (active && L.t == 0u) {
                u32 left = P.joint_bits;
                for (u32 i = 0u; i < P.joint_words; ++i) {
                    const u32 take = left < 32u ? left : 32u;
                    w[i] = take ? (u32)get_bits(smem, pos + VORONOI_SCALE_BITS + 32u * i, take) : 0u;
                    left -= take;
                }
            } else {
                for (u32 i = 0u; i < P.joint_words; ++i) w[i] = 0u;
            }
            // Thread 0 peels the digits off, least significant first, and hands each block's
            // digits to its thread.
            for (u32 b = 0u; b < P.t_per_vec; ++b) {
                u32 cb[8], chb = 0u;
                if (L.t == 0u) {
                    chb = limbs_div_rem(w, P.joint_words, P.scales);
                    for (int i = 0; i < 8; ++i) cb[i] = limbs_div_rem(w, P.joint_words, P.q);
                } else {
                    for (int i = 0; i < 8; ++i) cb[i] = 0u;
                }
                const u32 got_choice = shfl_u(chb, L.base);
                u32 got[8];
                for (int i = 0; i < 8; ++i) got[i] = shfl_u(cb[i], L.base);
                if (L.t == b) {
                    choice = got_choice;
                    for (int i = 0; i < 8; ++i) c[i] = got[i];
                }
            }
            if (L.t == 0u) {
                for (u32 i = 0u; i < P.joint_words; ++i) bad = bad || w[i] != 0u;
                if (active && bad) fault(status, v, VORONOI_SCALE_BITS, FAULT_JOINT_RANGE);
            }
            // A joint index past the end still decodes (to something) without reading out of
            // range: its digits are all below their radices.
        }
        float pt[8], y[8];
        point_of_coords(P, c, pt);
        const float s = sigma * alpha_of(P, choice);
        for (int i = 0; i < 8; ++i) y[i] = s * pt[i];
        fwht(P, L, tab, y, false, true);
        if (k != 1.0f) {
            for (int j = 0; j < 8; ++j) y[j] = saturate_f(y[j] / k);
        }
        if (active) store8(P, dst, v, L.t, y);
    }
}

// ---------------------------------------------------------------------------------------------
// TurboQuant-MSE (kv-codec's codecs/baselines/turboquant.rs)
// ---------------------------------------------------------------------------------------------

#define FAULT_NORM_SIGN 3u
#define FAULT_NORM_NOT_FINITE 4u

extern "C" __global__ void kvc_turboquant_encode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    const float* thresholds = (const float*)(tab + P.off_thresholds);
    zero_words(smem, chunk_words(P));
    __syncthreads();
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        float x[8];
        load8(P, src, v, L.t, active, x);
        if (active && !all_finite8(x)) fault(status, v, 0u, 0u);
        // unit_and_norm: scale by the power of two that brings absmax into [1, 2), then
        // divide by the norm in the fixed order.
        const float m = absmax_threads(P, L, x, 0u, P.t_per_vec);
        const int e = m > 0.0f ? exponent_of(m) : 0;
        for (int j = 0; j < 8; ++j) x[j] = m > 0.0f ? ldexp_steps(x[j], -e) : 0.0f;
        const float n = sqrtf(sumsq(P, L, warp_vals(P, smem, L), x));
        for (int j = 0; j < 8; ++j) x[j] = m > 0.0f ? x[j] / n : 0.0f;
        const u32 code = m > 0.0f ? scale_encode(ldexp_steps(n, e), 7u) : 0u;
        fwht(P, L, tab, x, true, true);
        if (active) {
            const u32 pos = lv * P.bits;
            if (L.t == 0u) put_bits(smem, pos, code, 16u);
            // The thread's 8 levels, back to back (at most 64 bits), written at once.
            u64 idx = 0ull;
            for (int j = 0; j < 8; ++j) {
                // partition_point(t < v): the number of thresholds below the value.
                u32 lo = 0u, hi = P.nthresholds;
                while (lo < hi) {
                    const u32 mid = (lo + hi) >> 1;
                    if (thresholds[mid] < x[j]) lo = mid + 1u; else hi = mid;
                }
                idx |= (u64)lo << ((u32)j * P.vbits);
            }
            put_bits(smem, pos + 16u + 8u * L.t * P.vbits, idx, 8u * P.vbits);
        }
    }
    __syncthreads();
    store_chunk(P, smem, (unsigned char*)dst, chunk);
}

extern "C" __global__ void kvc_turboquant_decode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    const float* levels = (const float*)(tab + P.off_levels);
    load_chunk(P, (const unsigned char*)src, smem, chunk);
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        const u32 pos = lv * P.bits;
        const u32 code = active ? (u32)get_bits(smem, pos, 16u) : 0u;
        float n = scale_value(code & 0x7fffu, 7u);
        if (code & 0x8000u) {
            if (active && L.t == 0u) fault(status, v, 0u, FAULT_NORM_SIGN);
            n = 0.0f;
        } else if (!finite_f(n)) {
            if (active && L.t == 0u) fault(status, v, 0u, FAULT_NORM_NOT_FINITE);
            n = 0.0f;
        }
        float y[8];
        const u64 idx = active ? get_bits(smem, pos + 16u + 8u * L.t * P.vbits, 8u * P.vbits) : 0ull;
        for (int j = 0; j < 8; ++j) y[j] = levels[(u32)(idx >> ((u32)j * P.vbits)) & low_mask(P.vbits)];
        fwht(P, L, tab, y, false, true);
        for (int j = 0; j < 8; ++j) y[j] = saturate_f(y[j] * n);
        if (active) store8(P, dst, v, L.t, y);
    }
}

// ---------------------------------------------------------------------------------------------
// Per-value baselines: bf16, FP8 E4M3 and symmetric integers (codecs/baselines/{float,int}.rs)
// ---------------------------------------------------------------------------------------------

#define FAULT_BF16_NOT_FINITE 5u
#define FAULT_SCALE_SIGN 6u
#define FAULT_FP8_NAN 7u
#define FAULT_F16X_ESCAPE 8u
#define FAULT_INT_SCALE_NEGATIVE 9u
#define FAULT_INT_LEVEL 10u

// The scale of an int group from its 16-bit code, with in *fault the CPU's reason when the
// code is one no encoder writes (an escape past the table: scale 0; a negative scale: kept),
// else 0.
__device__ __forceinline__ float int_scale_of(u32 code, u32* fault) {
    float s;
    if (!f16x_decode(code, &s)) { *fault = FAULT_F16X_ESCAPE; return 0.0f; }
    *fault = sign_negative(s) ? FAULT_INT_SCALE_NEGATIVE : 0u;
    return s;
}

// Bit position of value i of a vector in a grouped layout: per group a 16-bit scale, then
// the group's values of vbits bits each.
__device__ __forceinline__ u32 grouped_pos(const Params& P, u32 i) {
    const u32 g = i / P.group;
    return g * (16u + P.vbits * P.group) + 16u + (i % P.group) * P.vbits;
}

// The codecs round the IEEE quotient x / s to a grid (integers; FP8 E4M3FN values), which on
// the GPU costs a division routine per value. Instead: with r = 1/s rounded to nearest,
// y = x * r lies within 3 * 2^-24 |x/s| of the rounded quotient (three roundings of at most
// 2^-24 each, r and y normal), so the quotient lies in [y (1 - 2^-20), y (1 + 2^-20)] even
// after those two products round. Both grid roundings are monotone: where the two ends round
// to the same grid point, so does the quotient, and that point is the codec's. Near a
// rounding boundary (about one value in 10^4) the ends differ and the values are divided. r
// is normal for s in [2^-125, 2^125]; outside, every value is divided. Below the normal range y
// loses relative accuracy, but it and the quotient are then both far below half the smallest
// grid step and round alike (to a zero of x's sign).
#define WINDOW_LOWER 0.99999904632568359375f  // 1 - 2^-20
#define WINDOW_UPPER 1.00000095367431640625f  // 1 + 2^-20
__device__ __forceinline__ bool reciprocal_ok(float s) { return s >= pow2f(-125) && s <= pow2f(125); }

// The integer codes rint(x[j] / s) for s > 0, clamped to [-l, l] with l = 2^(vbits-1) - 1,
// as vbits-bit two's complement fields (value j at bit j * vbits), by the window above, with
// vbits = VB where VB is not 0 (the widths in common use: constant shifts, and 4-bit fields
// packed in one 32-bit word). Each value is rounded once, q = rint_add(y), and the window
// [y (1 - 2^-20), y (1 + 2^-20)] lies strictly between the half-integers around q when
// |y - q| + |y| 2^-20 < 1/2, which the test below ensures with margin for its own rounding
// (|y - q| is exact; so is |y| 2^-19; 1/2 - |y| 2^-19 rounds by at most 2^-26), so the
// quotient rounds to q. Above 2^18 the test fails, so rint_add's range is never exceeded;
// where any value's test fails, all eight are divided (one rare branch per thread).
template <u32 VB>
__device__ __forceinline__ u64 int_quotients(const float x[8], float s, float r, bool fast, u32 runtime_vbits) {
    const u32 vbits = VB != 0u ? VB : runtime_vbits;
    const float l = (float)((1 << (vbits - 1u)) - 1);
    float q[8];
    bool settled = fast;
    for (int j = 0; j < 8; ++j) {
        const float y = x[j] * r;
        q[j] = rint_add(y);
        settled = settled && fabsf(y - q[j]) < 0.5f - fabsf(y) * 1.9073486328125e-06f;  // 2^-19
    }
    if (!settled) {
        for (int j = 0; j < 8; ++j) q[j] = rintf(x[j] / s);
    }
    // With s an f16 normal (the scale of the group's largest magnitude m over l, within 2^-11
    // of m / l), every |x / s| is at most l (1 + 2^-10) < l + 1/2, so every q is already in
    // [-l, l] and the clamp changes nothing: it is skipped. Subnormal and escaped scales,
    // coarser, keep it, and so do the divided values (a non-finite input among them takes the
    // clamp's bytes).
    if (!(settled && s >= 6.103515625e-05f && s <= 65504.0f)) {
        for (int j = 0; j < 8; ++j) q[j] = fminf(fmaxf(q[j], -l), l);
    }
    if (VB == 4u) {
        u32 packed = 0u;
        for (int j = 0; j < 8; ++j) packed |= (small_int_bits(q[j]) & 0xfu) << (4u * (u32)j);
        return packed;
    }
    if (VB == 8u) {
        u32 half[2] = {0u, 0u};
        for (int j = 0; j < 8; ++j) half[j >> 2] |= (small_int_bits(q[j]) & 0xffu) << (8u * ((u32)j & 3u));
        return (u64)half[0] | ((u64)half[1] << 32);
    }
    u64 packed = 0ull;
    for (int j = 0; j < 8; ++j) {
        const u32 c = small_int_bits(q[j]) & low_mask(vbits);
        packed |= (u64)c << ((u32)j * vbits);
    }
    return packed;
}

// e4m3_encode of two floats, `lo` in the low byte: on sm_89 and later one
// cvt.rn.satfinite.e4m3x2.f32, which rounds to nearest even and saturates to +-448 as
// e4m3_encode does for every finite value (NaN never reaches it: inputs are checked finite).
__device__ __forceinline__ u32 e4m3_encode2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    unsigned short r;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
    return (u32)r;
#else
    return e4m3_encode(lo) | (e4m3_encode(hi) << 8);
#endif
}

// The E4M3 codes of x[0..8] / s (s > 0) as 8 bytes, value j in byte j, by the window above;
// where any window's ends disagree, all eight values are divided.
__device__ __forceinline__ u64 e4m3_quotients(const float x[8], float s, float r, bool fast) {
    u64 codes = 0ull;
    bool settled = fast;
    for (int j = 0; j < 8; j += 2) {
        const float y0 = x[j] * r, y1 = x[j + 1] * r;
        const u32 pair = e4m3_encode2(y0 * WINDOW_LOWER, y1 * WINDOW_LOWER);
        settled = settled && pair == e4m3_encode2(y0 * WINDOW_UPPER, y1 * WINDOW_UPPER);
        codes |= (u64)pair << (8u * (u32)j);
    }
    if (!settled) {
        codes = 0ull;
        for (int j = 0; j < 8; j += 2) codes |= (u64)e4m3_encode2(x[j] / s, x[j + 1] / s) << (8u * (u32)j);
    }
    return codes;
}

// The rounds of kvc_scalar_encode for one codec, fixed at compile time so that the loop
// holds only that codec's code and no branches on it.
template <u32 CODEC, u32 VB>
__device__ __forceinline__ void scalar_encode_rounds(const Params& P, const Lane& L, u32 chunk, const void* src, u32* smem, u64* status) {
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    const u32 gt = P.group >> 3;  // threads per group
    // The first thread of the thread's group, whether it is that thread (which writes the
    // group's scale), and where its values lie within a vector (the scale just before the
    // group's first value): the same every round, so the divisions are paid once per thread.
    const u32 group_t0 = (L.t / gt) * gt;
    const u32 first = 8u * L.t;
    const bool writes_scale = first % P.group == 0u;
    const u32 at_values = grouped_pos(P, first);
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        float x[8];
        load8(P, src, v, L.t, active, x);
        if (active && !all_finite8(x)) fault(status, v, 0u, 0u);
        const u32 pos = lv * P.bits;
        if (CODEC == CODEC_BF16) {
            if (active) {
                // Four values per 64-bit write.
                u64 quads[2] = {0ull, 0ull};
                for (int j = 0; j < 8; ++j) {
                    u32 b = f32_to_bf16(x[j]);
                    if ((b & 0x7fffu) == 0x7f80u) b -= 1u;
                    quads[j >> 2] |= (u64)b << (16u * ((u32)j & 3u));
                }
                for (u32 i = 0u; i < 2u; ++i) put_bits(smem, pos + 128u * L.t + 64u * i, quads[i], 64u);
            }
            continue;
        }
        const float m = absmax_threads(P, L, x, group_t0, gt);
        u32 code;
        float s;
        if (CODEC == CODEC_FP8) {
            code = m == 0.0f ? 0u : scale_encode(m / 448.0f, 7u);
            if (m != 0.0f && code == 0u) code = 1u;
            s = scale_value(code, 7u);
        } else {
            const int l = (1 << ((VB != 0u ? VB : P.vbits) - 1u)) - 1;
            code = f16x_encode(m / (float)l);
            f16x_decode(code, &s);
        }
        if (active) {
            if (writes_scale) put_bits(smem, pos + at_values - 16u, code, 16u);
            // The thread's 8 values lie in one group, back to back: assembled in a register
            // and written with one put_bits (a few shared-memory ORs, not one per value).
            const bool fast = reciprocal_ok(s);
            // 1/s rounded to nearest: rcp.rn, cheaper than the division routine.
            const float r = fast ? __frcp_rn(s) : 0.0f;
            u64 packed = 0ull;
            if (CODEC == CODEC_FP8) {
                packed = s > 0.0f ? e4m3_quotients(x, s, r, fast) : 0ull;
            } else {
                packed = s > 0.0f ? int_quotients<VB>(x, s, r, fast, P.vbits) : 0ull;
            }
            put_bits(smem, pos + at_values, packed, 8u * (VB != 0u ? VB : P.vbits));
        }
    }
}

extern "C" __global__ void kvc_scalar_encode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    zero_words(smem, chunk_words(P));
    __syncthreads();
    if (P.codec == CODEC_BF16) scalar_encode_rounds<CODEC_BF16, 0u>(P, L, chunk, src, smem, status);
    else if (P.codec == CODEC_FP8) scalar_encode_rounds<CODEC_FP8, 0u>(P, L, chunk, src, smem, status);
    else if (P.vbits == 4u) scalar_encode_rounds<CODEC_INT, 4u>(P, L, chunk, src, smem, status);
    else if (P.vbits == 8u) scalar_encode_rounds<CODEC_INT, 8u>(P, L, chunk, src, smem, status);
    else scalar_encode_rounds<CODEC_INT, 0u>(P, L, chunk, src, smem, status);
    __syncthreads();
    store_chunk(P, smem, (unsigned char*)dst, chunk);
}

extern "C" __global__ void kvc_scalar_decode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    load_chunk(P, (const unsigned char*)src, smem, chunk);
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    // Where the thread's fields lie within a vector, the same every round (the divisions
    // of grouped_pos once per thread, not per vector): its group's scale, its first value,
    // and whether it is its group's first thread, which alone reports scale faults (once
    // per field). Groups are multiples of 8 values, so one group per thread.
    const u32 first = 8u * L.t;
    const u32 at_scale = grouped_pos(P, first - first % P.group) - 16u;
    const u32 at0 = grouped_pos(P, first);
    const bool reporter = first % P.group == 0u;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        if (!active) continue;
        const u32 pos = lv * P.bits;
        float y[8];
        if (P.codec == CODEC_BF16) {
            // Four values per 64-bit read.
            const u64 quads[2] = {get_bits(smem, pos + 128u * L.t, 64u), get_bits(smem, pos + 128u * L.t + 64u, 64u)};
            for (int j = 0; j < 8; ++j) {
                const u32 at = 16u * (8u * L.t + (u32)j);
                y[j] = bf16_to_f32((u32)(quads[j >> 2] >> (16u * ((u32)j & 3u))) & 0xffffu);
                if (!finite_f(y[j])) fault(status, v, at, FAULT_BF16_NOT_FINITE);
            }
        } else {
            const u32 code = (u32)get_bits(smem, pos + at_scale, 16u);
            float s = 0.0f;
            if (P.codec == CODEC_FP8) {
                if (code & 0x8000u) { if (reporter) fault(status, v, at_scale, FAULT_SCALE_SIGN); }
                else {
                    s = scale_value(code, 7u);
                    if (!finite_f(s)) { if (reporter) fault(status, v, at_scale, FAULT_SCALE_NOT_FINITE); s = 0.0f; }
                }
            } else {
                u32 f;
                s = int_scale_of(code, &f);
                if (f != 0u && reporter) fault(status, v, at_scale, f);
            }
            // The thread's 8 values lie in one group, back to back: one read of 8 * vbits bits.
            const u64 raws = get_bits(smem, pos + at0, 8u * P.vbits);
            for (int j = 0; j < 8; ++j) {
                const u32 at = at0 + (u32)j * P.vbits;
                const u32 raw = (u32)(raws >> ((u32)j * P.vbits)) & low_mask(P.vbits);
                if (P.codec == CODEC_FP8) {
                    float val;
                    if (!e4m3_decode(raw, &val)) { fault(status, v, at, FAULT_FP8_NAN); val = 0.0f; }
                    y[j] = saturate_f(s * val);
                } else {
                    const u32 shift = 32u - P.vbits;
                    const int q = ((int)(raw << shift)) >> shift;
                    if (q == -(1 << (P.vbits - 1u))) fault(status, v, at, FAULT_INT_LEVEL);
                    y[j] = saturate_f((float)q * s);
                }
            }
        }
        store8(P, dst, v, L.t, y);
    }
}

// ---------------------------------------------------------------------------------------------
// Compatibility mode: the published D4/E8 box codec (kv-codec's codecs/compat.rs)
// ---------------------------------------------------------------------------------------------

#define FAULT_BLOCK_RANGE 11u
#define FAULT_COMPAT_SCALE 12u
#define MAX_COMPAT_LIMBS 64u

// counts[j][t] of lattice-core's ParityBox (length-j integer vectors in [lo, hi] whose sum
// has parity t), as u64 pairs of words at word offset `off` of the tables.
__device__ __forceinline__ u64 box_count(const u32* tab, u32 off, int j, u32 t) {
    const u32* w = tab + off + 4u * (u32)j + 2u * t;
    return (u64)w[0] | ((u64)w[1] << 32);
}

// Number of even integers in [a, b] (floor division by 2 is an arithmetic shift).
__device__ __forceinline__ long long evens_in(long long a, long long b) {
    return a > b ? 0 : (b >> 1) - ((a - 1) >> 1);
}

// Lexicographic rank of the even-sum vector z in [lo, hi]^k (ParityBox::rank).
__device__ __forceinline__ u64 box_rank(const u32* tab, u32 off, long long lo, int k, const int* z) {
    u32 t = 0u;
    u64 rank = 0ull;
    for (int pos = 0; pos < k; ++pos) {
        const long long v = z[pos];
        const long long evens_below = evens_in(lo, v - 1);
        const long long odds_below = (v - lo) - evens_below;
        rank += (u64)evens_below * box_count(tab, off, k - pos - 1, t) + (u64)odds_below * box_count(tab, off, k - pos - 1, t ^ 1u);
        t ^= (u32)(v & 1);
    }
    return rank;
}

// The even-sum vector of rank `index` (ParityBox::unrank; the caller checked the range).
__device__ __forceinline__ void box_unrank(const u32* tab, u32 off, long long lo, int k, u64 index, float* out) {
    u32 t = 0u;
    const u32 plo = (u32)(lo & 1);
    for (int pos = 0; pos < k; ++pos) {
        const u64 first = box_count(tab, off, k - pos - 1, t ^ plo);
        const u64 pair = box_count(tab, off, k - pos - 1, t) + box_count(tab, off, k - pos - 1, t ^ 1u);
        const u64 p = index / pair;
        index -= p * pair;
        long long v = lo + 2 * (long long)p;
        if (index >= first) { index -= first; v += 1; }
        out[pos] = (float)v;
        t ^= (u32)(v & 1);
    }
}

__device__ __forceinline__ u64 words_u64(u32 lo, u32 hi) { return (u64)lo | ((u64)hi << 32); }

// Quantises one block of k = 4 (D4) or 8 (E8) values of y/s to its box point and returns
// the index. `k` is a constant at every call, so the arrays stay in registers.
__device__ __forceinline__ u64 compat_encode_block(const Params& P, const u32* tab, const float* x, int k) {
    const float q = P.box_qf;
    const long long lo = -(long long)P.box_q;
    float p[8];
    int z[8];
    if (k == 4) {
        dn_nearest<true>(x, p, 4, -q, q);
        for (int i = 0; i < 4; ++i) z[i] = (int)p[i];
        return box_rank(tab, P.off_counts, lo, 4, z);
    }
    e8_nearest<true>(x, p, -q, q);
    const bool integer = (((int)(p[0] * 2.0f)) & 1) == 0;
    if (integer) {
        for (int i = 0; i < 8; ++i) z[i] = (int)p[i];
        return box_rank(tab, P.off_counts, lo, 8, z);
    }
    for (int i = 0; i < 8; ++i) z[i] = (int)(p[i] - 0.5f);
    return words_u64(P.int_size_lo, P.int_size_hi) + box_rank(tab, P.off_counts_half, lo, 8, z);
}

// The box point of `index` (false when the index is past the codebook), k as above.
__device__ __forceinline__ bool compat_decode_block(const Params& P, const u32* tab, u64 index, float* out, int k) {
    const long long lo = -(long long)P.box_q;
    for (int i = 0; i < k; ++i) out[i] = 0.0f;
    if (index >= words_u64(P.size_lo, P.size_hi)) return false;
    if (k == 4) { box_unrank(tab, P.off_counts, lo, 4, index, out); return true; }
    const u64 integers = words_u64(P.int_size_lo, P.int_size_hi);
    if (index < integers) { box_unrank(tab, P.off_counts, lo, 8, index, out); return true; }
    box_unrank(tab, P.off_counts_half, lo, 8, index - integers, out);
    for (int i = 0; i < 8; ++i) out[i] = out[i] + 0.5f;
    return true;
}

// value = value * radix + add over 64-bit limbs.
__device__ __forceinline__ void limbs64_mul_add(u64* limbs, u32 count, u64 radix, u64 add) {
    u64 carry = add;
    for (u32 i = 0u; i < count; ++i) {
        const u64 lo = limbs[i] * radix;
        const u64 hi = __umul64hi(limbs[i], radix);
        const u64 sum = lo + carry;
        limbs[i] = sum;
        carry = hi + (sum < lo ? 1ull : 0ull);
    }
}

// (u1·2^64 + u0) / v for u1 < v: quotient, remainder in *r (Hacker's Delight, divlu).
__device__ __forceinline__ u64 div128by64(u64 u1, u64 u0, u64 v, u64* r) {
    const u64 b = 1ull << 32;
    const int s = __clzll((long long)v);
    v <<= s;
    const u64 vn1 = v >> 32, vn0 = v & 0xffffffffull;
    const u64 un32 = (u1 << s) | (s == 0 ? 0ull : (u0 >> (64 - s)));
    const u64 un10 = u0 << s;
    const u64 un1 = un10 >> 32, un0 = un10 & 0xffffffffull;
    u64 q1 = un32 / vn1;
    u64 rhat = un32 - q1 * vn1;
    while (q1 >= b || q1 * vn0 > b * rhat + un1) { q1 -= 1; rhat += vn1; if (rhat >= b) break; }
    const u64 un21 = un32 * b + un1 - q1 * v;
    u64 q0 = un21 / vn1;
    rhat = un21 - q0 * vn1;
    while (q0 >= b || q0 * vn0 > b * rhat + un0) { q0 -= 1; rhat += vn1; if (rhat >= b) break; }
    *r = (un21 * b + un0 - q0 * v) >> s;
    return q1 * b + q0;
}

// norm_to_bits of compat.rs: the f16 of the norm, or (outside f16's normal range) the sign
// bit as an escape flag over the bf16 of the norm.
__device__ __forceinline__ u32 compat_norm_bits(float n) {
    const u32 h = f32_to_f16(n);
    const u32 e = (h >> 10) & 0x1fu;
    if ((e != 0u && e != 31u) || n == 0.0f) return h;
    return 0x8000u | f32_to_bf16(n);
}

extern "C" __global__ void kvc_compat_encode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    zero_words(smem, chunk_words(P));
    __syncthreads();
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    const u32 bpt = 8u / P.cblock;  // blocks per thread
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        float x[8];
        load8(P, src, v, L.t, active, x);
        if (active && !all_finite8(x)) fault(status, v, 0u, 0u);
        // codec::norm: the fixed-order norm of x·k, k the exact power of two of safe_prescale.
        const float m = absmax_threads(P, L, x, 0u, P.t_per_vec);
        const float k = m > pow2f(60) ? pow2f(-70) : ((m > 0.0f && m < pow2f(-60)) ? pow2f(70) : 1.0f);
        float w[8];
        for (int j = 0; j < 8; ++j) w[j] = x[j] * k;
        const float root = sqrtf(sumsq(P, L, warp_vals(P, smem, L), w));
        const float n = k == 1.0f ? root : fminf(root / k, __uint_as_float(0x7f7fffffu));
        const bool zero = n == 0.0f;
        float y[8];
        for (int j = 0; j < 8; ++j) y[j] = zero ? 0.0f : x[j] / n;
        fwht(P, L, tab, y, true, false);
        const u32 qh = f32_to_f16(absmax_threads(P, L, y, 0u, P.t_per_vec));
        const float s = f16_to_f32(qh) / P.box_qf;
        for (int j = 0; j < 8; ++j) y[j] = zero ? 0.0f : y[j] / s;
        // D4: two blocks per thread (values 0-3 and 4-7); E8: one.
        u64 idx0, idx1 = 0ull;
        if (bpt == 2u) {
            idx0 = compat_encode_block(P, tab, y, 4);
            idx1 = compat_encode_block(P, tab, y + 4, 4);
        } else {
            idx0 = compat_encode_block(P, tab, y, 8);
        }
        const u32 pos = lv * P.bits;
        if (!P.joint) {
            if (active) {
                if (L.t == 0u) {
                    put_bits(smem, pos, compat_norm_bits(n), 16u);
                    put_bits(smem, pos + 16u, zero ? 0u : qh, 16u);
                }
                put_bits(smem, pos + 32u + L.t * bpt * P.block_bits, idx0, P.block_bits);
                if (bpt == 2u) put_bits(smem, pos + 32u + (L.t * 2u + 1u) * P.block_bits, idx1, P.block_bits);
            }
        } else {
            // One mixed-radix number over the blocks, radix = codebook size: Horner from the
            // last block, in 64-bit limbs.
            const u64 radix = words_u64(P.size_lo, P.size_hi);
            u64 limbs[MAX_COMPAT_LIMBS];
            for (u32 i = 0u; i < P.joint_limbs; ++i) limbs[i] = 0ull;
            for (int t = (int)P.t_per_vec - 1; t >= 0; --t) {
                const u64 got0 = words_u64(shfl_u((u32)idx0, L.base + (u32)t), shfl_u((u32)(idx0 >> 32), L.base + (u32)t));
                const u64 got1 = words_u64(shfl_u((u32)idx1, L.base + (u32)t), shfl_u((u32)(idx1 >> 32), L.base + (u32)t));
                if (L.t == 0u) {
                    if (bpt == 2u) limbs64_mul_add(limbs, P.joint_limbs, radix, got1);
                    limbs64_mul_add(limbs, P.joint_limbs, radix, got0);
                }
            }
            if (active && L.t == 0u) {
                put_bits(smem, pos, compat_norm_bits(n), 16u);
                put_bits(smem, pos + 16u, zero ? 0u : qh, 16u);
                u32 left = P.joint_bits;
                for (u32 i = 0u; left > 0u; ++i) {
                    const u32 take = left < 64u ? left : 64u;
                    put_bits(smem, pos + 32u + 64u * i, take == 64u ? limbs[i] : (limbs[i] & ((1ull << take) - 1ull)), take);
                    left -= take;
                }
            }
        }
    }
    __syncthreads();
    store_chunk(P, smem, (unsigned char*)dst, chunk);
}

extern "C" __global__ void kvc_compat_decode(const Params P, const void* src, void* dst, const u32* tab, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(P);
    const u32 chunk = blockIdx.x;
    load_chunk(P, (const unsigned char*)src, smem, chunk);
    const u32 per_round = (blockDim.x >> 5) * P.vpw;
    const u32 bpt = 8u / P.cblock;
    for (u32 r0 = 0u; r0 < P.chunk; r0 += per_round) {
        const u32 lv = r0 + L.warp * P.vpw + L.seg;
        const u64 v = (u64)chunk * P.chunk + lv;
        const bool active = L.slot && lv < P.chunk && v < (u64)P.n;
        const u32 pos = lv * P.bits;
        const u32 nb = active ? (u32)get_bits(smem, pos, 16u) : 0u;
        const u32 qb = active ? (u32)get_bits(smem, pos + 16u, 16u) : 0u;
        float n = (nb & 0x8000u) == 0u ? f16_to_f32(nb) : bf16_to_f32(nb & 0x7fffu);
        if (!finite_f(n)) { if (active && L.t == 0u) fault(status, v, 0u, FAULT_NORM_NOT_FINITE); n = 0.0f; }
        const float qmax = f16_to_f32(qb);
        if (!finite_f(qmax) || qmax < 0.0f) { if (active && L.t == 0u) fault(status, v, 16u, FAULT_COMPAT_SCALE); }
        const float s = qmax / P.box_qf;
        u64 idx0 = 0ull, idx1 = 0ull;
        if (!P.joint) {
            if (active) {
                idx0 = get_bits(smem, pos + 32u + L.t * bpt * P.block_bits, P.block_bits);
                if (bpt == 2u) idx1 = get_bits(smem, pos + 32u + (L.t * 2u + 1u) * P.block_bits, P.block_bits);
            }
        } else {
            const u64 radix = words_u64(P.size_lo, P.size_hi);
            u64 limbs[MAX_COMPAT_LIMBS];
            u32 left = P.joint_bits;
            for (u32 i = 0u; i < P.joint_limbs; ++i) {
                const u32 take = left < 64u ? left : 64u;
                limbs[i] = (active && L.t == 0u) ? get_bits(smem, pos + 32u + 64u * i, take) : 0ull;
                left -= take;
            }
            for (u32 t = 0u; t < P.t_per_vec; ++t) {
                u64 mine0 = 0ull, mine1 = 0ull;
                if (L.t == 0u) {
                    u64 rem = 0ull;
                    for (int i = (int)P.joint_limbs - 1; i >= 0; --i) limbs[i] = div128by64(rem, limbs[i], radix, &rem);
                    mine0 = rem;
                    if (bpt == 2u) {
                        rem = 0ull;
                        for (int i = (int)P.joint_limbs - 1; i >= 0; --i) limbs[i] = div128by64(rem, limbs[i], radix, &rem);
                        mine1 = rem;
                    }
                }
                const u64 got0 = words_u64(shfl_u((u32)mine0, L.base), shfl_u((u32)(mine0 >> 32), L.base));
                const u64 got1 = words_u64(shfl_u((u32)mine1, L.base), shfl_u((u32)(mine1 >> 32), L.base));
                if (L.t == t) { idx0 = got0; idx1 = got1; }
            }
            if (active && L.t == 0u) {
                bool bad = false;
                for (u32 i = 0u; i < P.joint_limbs; ++i) bad = bad || limbs[i] != 0ull;
                if (bad) fault(status, v, 32u, FAULT_JOINT_RANGE);
            }
        }
        float y[8];
        if (bpt == 2u) {
            if (!compat_decode_block(P, tab, idx0, y, 4) && active) fault(status, v, 32u + L.t * 2u * P.block_bits, FAULT_BLOCK_RANGE);
            if (!compat_decode_block(P, tab, idx1, y + 4, 4) && active) fault(status, v, 32u + (L.t * 2u + 1u) * P.block_bits, FAULT_BLOCK_RANGE);
        } else {
            if (!compat_decode_block(P, tab, idx0, y, 8) && active) fault(status, v, 32u + L.t * P.block_bits, FAULT_BLOCK_RANGE);
        }
        for (int j = 0; j < 8; ++j) y[j] = y[j] * s;
        fwht(P, L, tab, y, false, false);
        for (int j = 0; j < 8; ++j) y[j] = saturate_f(y[j] * n);
        if (active) store8(P, dst, v, L.t, y);
    }
}
