// kv-cuda attention kernels: decode attention (one query position per batch row) computed on
// the packed K and V pages of one layer, appended to kernels.cu by src/source.rs.
//
// The pages hold exactly the bytes kv-codec's cache holds (page i of a stream: the codec
// batch of positions i*P..(i+1)*P); a page table maps (stream, page) to a page of a pool
// whose pages start on 16-byte boundaries (the pool has 16 spare bytes at its end, so that a
// read of a field's words never leaves the allocation).
//
// The arithmetic follows kv-codec's cache attention (cache/attention.rs): each query is scaled
// by 1/sqrt(d) and rotated once into K's rotated domain; each key is decoded only to its
// rotated-domain reconstruction (decode_rotated: no inverse transform), dotted with the
// queries of its GQA group; values are summed in V's rotated domain and each output is
// rotated back once. Unlike the codecs, attention is not bit-exact with the CPU (the softmax
// runs in another order, with fused multiply-adds and fast exponentials); it is checked
// against the CPU within 1e-3 relative.
//
// Work split (FlashAttention-decoding style): kvc_attn_partial_g<G> gives each thread block a
// range of A.split tokens of one stream (batch row x KV head), which it stages chunk by
// chunk into shared memory (16-byte asynchronous copies, double-buffered). Each chunk is
// taken in two phases (see attn_partial): key decoding and partial dot products, summed
// through shared memory with one exponential per (token, query head); then value decoding
// with the weighted sums in registers. The partial kernels are stamped out per GQA group
// size and per codec family of K and V (the Voronoi decoder, or the per-value decoders:
// turboquant, bf16, fp8, int), so that each holds only the decoders it runs:
// kvc_attn_partial_<k><v>_g<G>, <k> and <v> each `v` or `s`.
// kvc_attn_combine merges the ranges of each query head and rotates the result back.

#define NEG_INF_F __uint_as_float(0xff800000u)

// 32 bits of staged page words from bit `pos` on. Reads the word after the field's first
// word too; staging copies one word past a chunk's last bit.
__device__ __forceinline__ u32 page_bits32(const u32* w, u32 pos) {
    const u32 i = pos >> 5;
    return __funnelshift_r(w[i], w[i + 1u], pos & 31u);
}

__device__ __forceinline__ u32 page_bits(const u32* w, u32 pos, u32 n) { return page_bits32(w, pos) & low_mask(n); }

__device__ __forceinline__ u64 page_bits64(const u32* w, u32 pos) {
    return (u64)page_bits32(w, pos) | ((u64)page_bits32(w, pos + 32u) << 32);
}

// Most tokens of a staged chunk (attention.rs's MAX_CHUNK).
#define MAX_CHUNK_TOKENS 128
// Warps per block of kvc_attn_combine (attention.rs's COMBINE_THREADS / 32), and the widest
// vectors the kernels take.
#define COMBINE_WARPS 4
// Threads per block of the partial kernels (attention.rs's PARTIAL_WARPS * 32), and the
// blocks per SM their register use is bounded for: 4 (about 120 registers, no spills) was
// faster on an H200 than 5 or 6, which spill.
#define ATTN_THREADS 128
#define ATTN_MIN_BLOCKS 4
#define MAX_HEAD_DIM 256
#define FAMILY_VORONOI 0
#define FAMILY_SCALAR 1

// Where a lane's fields lie within a vector (the same for every token, so computed once per
// kernel rather than per token): `a` the first bit of the lane's block or values, `b` the
// first bit of its group's scale (per-value codecs with groups).
struct LaneFields {
    u32 a, b;
};

__device__ __forceinline__ LaneFields lane_fields(const Params& P, u32 t) {
    LaneFields f;
    f.b = 0u;
    if (P.codec == CODEC_VORONOI) f.a = VORONOI_SCALE_BITS + t * (P.choice_bits + P.index_bits);
    else if (P.codec == CODEC_TURBOQUANT) f.a = 16u + 8u * t * P.vbits;
    else if (P.codec == CODEC_BF16) f.a = 16u * 8u * t;
    else {
        const u32 first = 8u * t;
        f.a = grouped_pos(P, first);
        f.b = grouped_pos(P, first - first % P.group) - 16u;
    }
    return f;
}

// An integer below 2^23 as a float, exactly, with one logic operation and one addition.
__device__ __forceinline__ float small_u32_to_f(u32 c) { return __uint_as_float(0x4b000000u | c) - 8388608.0f; }

// One half of the E8 decoder: dn_nearest<false> for n = 8, on x - o (o = 0 for
// D8, 1/2 for D8 + 1/2), kept as what the choice between the halves and the final point
// need: the errors e = x - o - rint(x - o), their largest magnitude, whether the rounded
// coordinates have odd sum (then the decoder moves the first coordinate of largest error
// one step the way its error points), and the squared distance to the decoded point. All of
// these are exact (multiples of 1/(2q)^2 far from f32's precision), so they equal the
// CPU's, whatever the order of the sums.
struct D8Half {
    float e[8];
    float kmax, dist;
    bool odd;
};

template <int HALF>
__device__ __forceinline__ void d8_half(const float x[8], D8Half& h) {
    float rs = 0.0f, ss = 0.0f, km = 0.0f;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        const float xs = HALF ? x[i] - 0.5f : x[i];
        const float r = rint_add(xs);
        h.e[i] = xs - r;
        rs += r;
        ss = fmaf(h.e[i], h.e[i], ss);
        km = fmaxf(km, fabsf(h.e[i]));
    }
    // The parity of the integer rs: the last mantissa bit of rs + 1.5 * 2^23.
    h.odd = (__float_as_uint(rs + RINT_MAGIC) & 1u) != 0u;
    h.kmax = km;
    // Moving a coordinate of error k one step changes its squared error by 1 - 2k.
    h.dist = h.odd ? ss + (1.0f - 2.0f * km) : ss;
}

// point_of_coords for a power-of-two q (the only Voronoi codecs attention takes): the coset's
// codebook point lambda - q Q_E8(lambda / q), with e8_closest's decoder unbounded. With
// x = lambda / q and p = Q_E8(x), the point is q (x - p): q times the chosen half's errors
// (the moved coordinate's less or more one), exact as the CPU's.
__device__ __forceinline__ void voronoi_point_pow2(const Params& P, const u32 c[8], float out[8]) {
    float cf[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) cf[i] = small_u32_to_f(c[i]);
    // x = (twice lambda) / (2q); the basis is lower triangular and mostly zeros.
    const float hq = 0.5f * P.inv_q;
    float x[8];
    #pragma unroll
    for (int j = 0; j < 8; ++j) {
        float tw = 0.0f;
        #pragma unroll
        for (int i = j; i < 8; ++i) {
            if (E8_BASIS_TWICE[i][j] != 0) tw += cf[i] * (float)E8_BASIS_TWICE[i][j];
        }
        x[j] = tw * hq;
    }
    D8Half h0, h1;
    d8_half<0>(x, h0);
    d8_half<1>(x, h1);
    const bool half = h1.dist < h0.dist;
    const float km = half ? h1.kmax : h0.kmax;
    const bool odd = half ? h1.odd : h0.odd;
    bool found = false;
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        float e = half ? h1.e[i] : h0.e[i];
        // The first coordinate of largest error is the one an odd sum moves.
        const bool first = !found && fabsf(e) == km;
        found = found || first;
        if (odd && first) e -= e >= 0.0f ? 1.0f : -1.0f;
        out[i] = P.qf * e;
    }
}

// Values 8t..8t+7 of the vector at bit `pos` of page `w` (t the lane's, whose fields `lf`
// locates), in the codec's rotated domain (what kv-codec's decode_rotated returns), as
// y[j] times the returned factor: the factor is the vector's (or group's) scale where a
// codec has one, so that a dot product or a weighted sum takes it once rather than per
// value. A field no encoder writes sets *bad to its fault code and decodes as zero, as far
// as the attention is concerned.
template <int F>
__device__ __forceinline__ float attn_decode8(const Params& P, const u32* tab, const u32* w, u32 pos, const LaneFields& lf, float y[8], u32* bad) {
    if (F == FAMILY_VORONOI) {
        const u32 code = page_bits(w, pos, VORONOI_SCALE_BITS);
        float sigma = scale_value(code, VORONOI_SCALE_MANTISSA);
        if (!finite_f(sigma)) { *bad = FAULT_SCALE_NOT_FINITE; sigma = 0.0f; }
        const u32 at = pos + lf.a;
        const u32 choice = page_bits(w, at, P.choice_bits);
        const u64 index = page_bits64(w, at + P.choice_bits);
        u32 c[8];
        #pragma unroll
        for (int i = 0; i < 8; ++i) c[i] = (u32)(index >> ((u32)i * P.log2q)) & (P.q - 1u);
        voronoi_point_pow2(P, c, y);
        return sigma * alpha_of(P, choice);
    } else if (P.codec == CODEC_TURBOQUANT) {
        const float* levels = (const float*)(tab + P.off_levels);
        const u32 code = page_bits(w, pos, 16u);
        float n = scale_value(code & 0x7fffu, 7u);
        if (code & 0x8000u) { *bad = FAULT_NORM_SIGN; n = 0.0f; }
        else if (!finite_f(n)) { *bad = FAULT_NORM_NOT_FINITE; n = 0.0f; }
        const u64 bits = page_bits64(w, pos + lf.a);
        const u32 mask = low_mask(P.vbits);
        #pragma unroll
        for (int j = 0; j < 8; ++j) y[j] = levels[(u32)(bits >> ((u32)j * P.vbits)) & mask];
        return n;
    } else if (P.codec == CODEC_BF16) {
        const u32 at = pos + lf.a;
        u32 h[4];
        if ((at & 127u) == 0u) {
            // Whole 16-byte units (every vector of 2^k bytes from 16 on): one load.
            const uint4 u = *(const uint4*)(w + (at >> 5));
            h[0] = u.x; h[1] = u.y; h[2] = u.z; h[3] = u.w;
        } else {
            #pragma unroll
            for (int i = 0; i < 4; ++i) h[i] = page_bits32(w, at + 32u * (u32)i);
        }
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            y[2 * i] = __uint_as_float(h[i] << 16);
            y[2 * i + 1] = __uint_as_float(h[i] & 0xffff0000u);
        }
        #pragma unroll
        for (int j = 0; j < 8; ++j) {
            if (!finite_f(y[j])) { *bad = FAULT_BF16_NOT_FINITE; y[j] = 0.0f; }
        }
        return 1.0f;
    } else {
        // FP8 and INT: the scale of this thread's group, then eight values of vbits bits,
        // contiguous (a group is a multiple of 8 values).
        const u32 code = page_bits(w, pos + lf.b, 16u);
        float s = 0.0f;
        if (P.codec == CODEC_FP8) {
            if (code & 0x8000u) *bad = FAULT_SCALE_SIGN;
            else {
                s = scale_value(code, 7u);
                if (!finite_f(s)) { *bad = FAULT_SCALE_NOT_FINITE; s = 0.0f; }
            }
        } else {
            if (!f16x_decode(code, &s)) { *bad = FAULT_F16X_ESCAPE; s = 0.0f; }
            else if (sign_negative(s)) { *bad = FAULT_INT_SCALE_NEGATIVE; }
        }
        const u64 bits = page_bits64(w, pos + lf.a);
        const u32 mask = low_mask(P.vbits);
        if (P.codec == CODEC_FP8) {
            #pragma unroll
            for (int j = 0; j < 8; ++j) {
                const u32 raw = (u32)(bits >> ((u32)j * P.vbits)) & mask;
                float val;
                if (!e4m3_decode(raw, &val)) { *bad = FAULT_FP8_NAN; val = 0.0f; }
                y[j] = saturate_f(s * val);
            }
            return 1.0f;
        }
        // INT: the levels as integers and the scale returned, unless the scale is so large
        // that a product could leave the f32 range, which the CPU saturates value by value.
        // Levels are vbits-bit two's complement: with the top bit flipped, a field is its
        // level plus 2^(vbits-1), turned into a float by the exponent trick of
        // small_u32_to_f (one logic operation, one addition). The lowest level (only the top
        // bit set) is the one no encoder writes.
        const u32 half = 1u << (P.vbits - 1u);
        const float off = 8388608.0f + (float)half;
        bool low = false;
        #pragma unroll
        for (int j = 0; j < 8; ++j) {
            const u32 raw = (u32)(bits >> ((u32)j * P.vbits)) & mask;
            low = low || raw == half;
            y[j] = __uint_as_float(0x4b000000u | (raw ^ half)) - off;
        }
        if (low) *bad = FAULT_INT_LEVEL;
        if (fabsf(s) > pow2f(100)) {
            #pragma unroll
            for (int j = 0; j < 8; ++j) y[j] = saturate_f(y[j] * s);
            return 1.0f;
        }
        return s;
    }
}

// One chunk of a range: tokens [c0, c1) of page `page` (of the stream's table), which
// starts at token `p0`, and where their bits start in the staged words (the page's words
// from a 16-byte boundary on). chunk_at divides once per chunk; the rest reuse these.
struct Chunk {
    u32 c0, c1;
    u32 page, p0;
    u32 kw0, vw0;  // first staged word of the page, K and V
};

__device__ __forceinline__ Chunk chunk_at(const AttnParams& A, u32 c0, u32 t1, u32 kbits, u32 vbits) {
    Chunk c;
    c.c0 = c0;
    c.page = c0 / A.page_tokens;
    c.p0 = c.page * A.page_tokens;
    c.c1 = min(min(c0 + A.chunk, c.p0 + A.page_tokens), t1);
    const u32 s0 = c0 - c.p0;
    c.kw0 = ((s0 * kbits) >> 5) & ~3u;
    c.vw0 = ((s0 * vbits) >> 5) & ~3u;
    return c;
}

// Queues the copy of a chunk's K and V words (from kw0/vw0 of page `page` of the pools to one
// word past the last bit, in whole 16-byte units) into `buf` (K words, then V words from
// A.k_words on).
__device__ __forceinline__ void stage(const AttnParams& A, const Chunk& c, u32 page, const unsigned char* kpool,
                                      const unsigned char* vpool, u32 kbits, u32 vbits, u32* buf) {
    const u32 s1 = c.c1 - c.p0;
    const u32 kend = ((((s1 * kbits) + 31u) >> 5) + 1u + 3u) & ~3u;
    const u32 vend = ((((s1 * vbits) + 31u) >> 5) + 1u + 3u) & ~3u;
    const u32* kp = (const u32*)(kpool + (u64)page * A.k_stride);
    const u32* vp = (const u32*)(vpool + (u64)page * A.v_stride);
    const u32 k4 = (kend - c.kw0) >> 2;
    const u32 v4 = (vend - c.vw0) >> 2;
    for (u32 i = threadIdx.x; i < k4 + v4; i += blockDim.x) {
        if (i < k4) copy16_async(buf + 4u * i, kp + c.kw0 + 4u * i);
        else copy16_async(buf + A.k_words + 4u * (i - k4), vp + c.vw0 + 4u * (i - k4));
    }
}

// Floats between consecutive tokens' score partials in shared memory: G heads times T
// lanes, padded so that the rows of consecutive tokens fall on other banks (and stay 16-byte
// aligned when T is a multiple of 4, for vector loads). attention.rs sizes the shared memory
// with the same rule.
__device__ __forceinline__ u32 part_stride(u32 G, u32 T) { return G * T + ((T & 3u) == 0u ? 4u : 1u); }

// A block of W warps takes the range of A.split tokens `blockIdx.x` of stream `blockIdx.y`,
// in chunks of at most A.chunk tokens within one page, double-buffered in shared memory.
// Lane t of vector slot `slot` (S = W vpw slots) owns values 8t..8t+7 of tokens
// slot, slot + S, ... of each chunk, and every chunk goes through two phases:
//  - scores: each lane decodes its 8 key values per token and writes G partial dot
//    products to shared memory; warp w then sums the T partials of each token for query
//    heads w, w + W, ..., takes the chunk's maximum, and computes each exponential once per
//    (token, head) against the block's running maximum, into shared memory, with the
//    factor that rescales the running sums when the maximum grew;
//  - values: each lane decodes its 8 values per token and accumulates G x 8 weighted sums
//    in registers (no shuffles).
// The running maximum is the block's, so the slots' sums are merged by plain addition at
// the end of the range; the block writes one partial state per query head.
template <int KF, int VF, int G>
__device__ __forceinline__ void attn_partial(const Params& PK, const Params& PV, const AttnParams& A, const float* qrot,
                                             const unsigned char* kpool, const unsigned char* vpool, const u32* table,
                                             const u32* tabk, const u32* tabv, float* pacc, float* pml, u64* status) {
    extern __shared__ u32 smem[];
    const Lane L = lane_of(PK);
    const u32 W = blockDim.x >> 5;
    const u32 stream = blockIdx.y;
    const u32 split = blockIdx.x;
    const u32 d = PK.d;
    const u32 T = PK.t_per_vec;
    const u32 S = W * PK.vpw;
    const u32 slot = L.warp * PK.vpw + L.seg;
    const u32 b = stream / A.kv_heads;
    const u32 h = stream % A.kv_heads;
    const u32 t0 = split * A.split;
    const u32 t1 = min(t0 + A.split, A.len);
    const u32 kbits = PK.bits, vbits = PV.bits;
    const LaneFields kf = lane_fields(PK, L.t), vf = lane_fields(PV, L.t);
    // Shared memory: two staging buffers, the queries (G x d), the score partials (chunk
    // rows of part_stride), the weights (chunk x G) and the rescale factors (G); at the end,
    // over the staging buffers, the maxima and sums (2G floats, in 16) and the slots' sums.
    const u32 ps = part_stride((u32)G, T);
    float* qs = (float*)(smem + 2u * A.stage_words);
    float* part = qs + (u32)G * d;
    float* pw = part + A.chunk * ps;
    float* resc = pw + A.chunk * (u32)G;
    for (u32 i = threadIdx.x; i < (u32)G * d; i += blockDim.x) {
        const u32 g = i / d;
        qs[i] = g < A.group ? qrot[(u64)(b * A.q_heads + h * A.group + g) * d + (i % d)] : 0.0f;
    }
    // Running maximum (block-wide, kept by the warps that own each head) and each lane's
    // share of the running sum of exponentials.
    float m[G], l[G], acc[G][8];
    #pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = NEG_INF_F;
        l[g] = 0.0f;
        #pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] = 0.0f;
    }
    const u32* table_s = table + (u64)stream * A.max_pages;
    u32 bad = 0u, bad_tok = 0xffffffffu;
    // The page of each chunk is looked up two chunks ahead, so that no warp waits on the
    // page table before queueing a chunk's copies.
    Chunk cur = chunk_at(A, t0, t1, kbits, vbits);
    stage(A, cur, __ldg(table_s + cur.page), kpool, vpool, kbits, vbits, smem);
    async_commit();
    Chunk next = chunk_at(A, cur.c1, t1, kbits, vbits);
    u32 next_page = next.c0 < t1 ? __ldg(table_s + next.page) : 0u;
    for (u32 it = 0u; cur.c0 < t1; ++it) {
        if (next.c0 < t1) stage(A, next, next_page, kpool, vpool, kbits, vbits, smem + ((it + 1u) & 1u) * A.stage_words);
        async_commit();
        const Chunk after = chunk_at(A, next.c1, t1, kbits, vbits);
        const u32 after_page = after.c0 < t1 ? __ldg(table_s + after.page) : 0u;
        async_wait(1u);
        __syncthreads();
        const u32* kw = smem + (it & 1u) * A.stage_words;
        const u32* vw = kw + A.k_words;
        const u32 cnt = cur.c1 - cur.c0;
        const u32 kpos0 = (cur.c0 - cur.p0) * kbits - 32u * cur.kw0;
        const u32 vpos0 = (cur.c0 - cur.p0) * vbits - 32u * cur.vw0;
        // Scores: two tokens per step, so that each query block loaded from shared memory
        // serves two tokens; the loop is not unrolled (each decoder's code appears twice).
        if (L.slot) {
#pragma unroll 1
            for (u32 li = slot; li < cnt; li += 2u * S) {
                const u32 lj = li + S;
                const bool two = lj < cnt;
                float y0[8], y1[8];
                u32 f = 0u;
                const float s0 = attn_decode8<KF>(PK, tabk, kw, kpos0 + li * kbits, kf, y0, &f);
                if (f != 0u && cur.c0 + li < bad_tok) { bad = f; bad_tok = cur.c0 + li; }
                float s1 = 0.0f;
                if (two) {
                    f = 0u;
                    s1 = attn_decode8<KF>(PK, tabk, kw, kpos0 + lj * kbits, kf, y1, &f);
                    if (f != 0u && cur.c0 + lj < bad_tok) { bad = f; bad_tok = cur.c0 + lj; }
                } else {
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) y1[j] = 0.0f;
                }
                #pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float4* qv = (const float4*)(qs + (u32)g * d + 8u * L.t);
                    const float4 qa = qv[0], qb = qv[1];
                    const float qq[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
                    float d0 = 0.0f, d1 = 0.0f;
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) {
                        d0 = fmaf(qq[j], y0[j], d0);
                        d1 = fmaf(qq[j], y1[j], d1);
                    }
                    part[li * ps + (u32)g * T + L.t] = d0 * s0;
                    if (two) part[lj * ps + (u32)g * T + L.t] = d1 * s1;
                }
            }
        }
        __syncthreads();
        // Softmax: warp w owns heads w, w + W, ...; each lane sums the partials of tokens
        // lane, lane + 32, ... and takes one exponential per token.
        #pragma unroll
        for (int g = 0; g < G; ++g) {
            if ((u32)g % W != L.warp) continue;
            float sc[MAX_CHUNK_TOKENS / 32];
            float mx = NEG_INF_F;
            #pragma unroll
            for (int k = 0; k < MAX_CHUNK_TOKENS / 32; ++k) {
                const u32 tok = L.lane + 32u * (u32)k;
                float s = NEG_INF_F;
                if (tok < cnt) {
                    const float* row = part + tok * ps + (u32)g * T;
                    s = 0.0f;
                    if ((T & 3u) == 0u) {
                        for (u32 t = 0u; t < T; t += 4u) {
                            const float4 v = *(const float4*)(row + t);
                            s += v.x; s += v.y; s += v.z; s += v.w;
                        }
                    } else {
                        for (u32 t = 0u; t < T; ++t) s += row[t];
                    }
                }
                sc[k] = s;
                mx = fmaxf(mx, s);
            }
            #pragma unroll
            for (u32 o = 16u; o > 0u; o >>= 1) mx = fmaxf(mx, shfl_xor_f(mx, o));
            const float mn = fmaxf(m[g], mx);
            const float r = m[g] == NEG_INF_F ? 0.0f : __expf(m[g] - mn);
            m[g] = mn;
            float sum = 0.0f;
            #pragma unroll
            for (int k = 0; k < MAX_CHUNK_TOKENS / 32; ++k) {
                const u32 tok = L.lane + 32u * (u32)k;
                if (tok < cnt) {
                    const float p = __expf(sc[k] - mn);
                    pw[tok * (u32)G + (u32)g] = p;
                    sum += p;
                }
            }
            l[g] = fmaf(l[g], r, sum);
            if (L.lane == 0u) resc[g] = r;
        }
        __syncthreads();
        // Values: rescale the sums where the maximum grew (the same for the whole block),
        // then accumulate the weighted values of the slot's tokens.
        if (L.slot) {
            #pragma unroll
            for (int g = 0; g < G; ++g) {
                const float r = resc[g];
                if (r != 1.0f) {
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) acc[g][j] *= r;
                }
            }
#pragma unroll 1
            for (u32 li = slot; li < cnt; li += S) {
                float y[8];
                u32 f = 0u;
                const float sv = attn_decode8<VF>(PV, tabv, vw, vpos0 + li * vbits, vf, y, &f);
                if (f != 0u && cur.c0 + li < bad_tok) { bad = f; bad_tok = cur.c0 + li; }
                float p[G];
                if (G % 4 == 0) {
                    #pragma unroll
                    for (int g = 0; g < G; g += 4) {
                        const float4 v = *(const float4*)(pw + li * (u32)G + (u32)g);
                        p[g] = v.x; p[g + 1] = v.y; p[g + 2] = v.z; p[g + 3] = v.w;
                    }
                } else {
                    #pragma unroll
                    for (int g = 0; g < G; ++g) p[g] = pw[li * (u32)G + (u32)g];
                }
                #pragma unroll
                for (int g = 0; g < G; ++g) {
                    const float ps_ = p[g] * sv;
                    #pragma unroll
                    for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(ps_, y[j], acc[g][j]);
                }
            }
        }
        __syncthreads();
        cur = next;
        next = after;
        next_page = after_page;
    }
    async_wait(0u);
    __syncthreads();
    if (bad != 0u) fault(status, bad_tok, 0u, bad);
    // The owners of each head reduce its sum of exponentials; every slot's weighted sums go
    // to shared memory (over the staging buffers, no longer in use), and are added up.
    float* fin = (float*)smem;
    float* wacc = fin + 16;
    #pragma unroll
    for (int g = 0; g < G; ++g) {
        if ((u32)g % W != L.warp) continue;
        float s = l[g];
        #pragma unroll
        for (u32 o = 16u; o > 0u; o >>= 1) s += shfl_xor_f(s, o);
        if (L.lane == 0u) { fin[2 * g] = m[g]; fin[2 * g + 1] = s; }
    }
    if (L.slot) {
        #pragma unroll
        for (int g = 0; g < G; ++g) {
            float4* o = (float4*)(wacc + (slot * (u32)G + (u32)g) * d + 8u * L.t);
            o[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
            o[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
        }
    }
    __syncthreads();
    for (u32 idx = threadIdx.x; idx < A.group * d; idx += blockDim.x) {
        const u32 g = idx / d, j = idx % d;
        float at = 0.0f;
        for (u32 sl = 0u; sl < S; ++sl) at += wacc[(sl * (u32)G + g) * d + j];
        const u64 item = ((u64)stream * A.splits + split) * A.group + g;
        pacc[item * d + j] = at;
        if (j == 0u) { pml[2u * item] = fin[2u * g]; pml[2u * item + 1u] = fin[2u * g + 1u]; }
    }
}

#define ATTN_PARTIAL(K, V, KF, VF, G)                                                                         \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS, ATTN_MIN_BLOCKS) kvc_attn_partial_##K##V##_g##G(const Params PK, const Params PV, const AttnParams A, \
                                                              const float* qrot, const unsigned char* kpool,       \
                                                              const unsigned char* vpool, const u32* table,        \
                                                              const u32* tabk, const u32* tabv, float* pacc,       \
                                                              float* pml, u64* status) {                           \
        attn_partial<KF, VF, G>(PK, PV, A, qrot, kpool, vpool, table, tabk, tabv, pacc, pml, status);               \
    }
#define ATTN_PARTIALS(G)                                          \
    ATTN_PARTIAL(v, v, FAMILY_VORONOI, FAMILY_VORONOI, G)         \
    ATTN_PARTIAL(v, s, FAMILY_VORONOI, FAMILY_SCALAR, G)          \
    ATTN_PARTIAL(s, v, FAMILY_SCALAR, FAMILY_VORONOI, G)          \
    ATTN_PARTIAL(s, s, FAMILY_SCALAR, FAMILY_SCALAR, G)
ATTN_PARTIALS(1)
ATTN_PARTIALS(2)
ATTN_PARTIALS(4)
ATTN_PARTIALS(8)

// Scales every query by A.scale and rotates it into K's rotated domain: qrot = R_K (q / sqrt d).
extern "C" __global__ void kvc_attn_query(const Params PK, const AttnParams A, const float* q, float* qrot, const u32* tabk) {
    const Lane L = lane_of(PK);
    const u32 v = blockIdx.x * ((blockDim.x >> 5) * PK.vpw) + L.warp * PK.vpw + L.seg;
    const bool active = L.slot && v < A.batch * A.q_heads;
    float x[8];
    const u64 off = (u64)v * PK.d + 8u * L.t;
    #pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = active ? q[off + (u64)j] * A.scale : 0.0f;
    if (A.rot_k) fwht(PK, L, tabk, x, true, true);
    if (active) {
        #pragma unroll
        for (int j = 0; j < 8; ++j) qrot[off + (u64)j] = x[j];
    }
}

// Merges the ranges of each query head (online-softmax states) and rotates the normalised
// sum back out of V's rotated domain: out = R_V^T (sum p v_rot / sum p). One block per query
// vector: the ranges are shared among the warps (lane l holding values 4l..4l+3, 4l+128..),
// whose sums meet in shared memory; warp 0 then rotates the vector back as the codec
// kernels do (lane segment 0, values 8t..8t+7 on lane t).
extern "C" __global__ void kvc_attn_combine(const Params PV, const AttnParams A, const float* pacc, const float* pml, float* out, const u32* tabv) {
    // Shared memory: each warp's sums (d floats), maxima and totals.
    extern __shared__ u32 smem[];
    const u32 v = blockIdx.x;
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const u32 d = PV.d;
    float* red = (float*)smem;
    float* wmax = red + COMBINE_WARPS * d;
    float* wtot = wmax + COMBINE_WARPS;
    const u32 b = v / A.q_heads;
    const u32 qh = v % A.q_heads;
    const u32 stream = b * A.kv_heads + qh / A.group;
    const u32 g = qh % A.group;
    const u64 first = (u64)stream * A.splits * A.group + g;
    // The largest maximum of the ranges.
    float mx = NEG_INF_F;
    for (u32 sp = threadIdx.x; sp < A.splits; sp += blockDim.x) mx = fmaxf(mx, pml[2u * (first + (u64)sp * A.group)]);
    #pragma unroll
    for (u32 o = 16u; o > 0u; o >>= 1) mx = fmaxf(mx, shfl_xor_f(mx, o));
    if (lane == 0u) wmax[warp] = mx;
    __syncthreads();
    mx = wmax[0];
    for (u32 w = 1u; w < COMBINE_WARPS; ++w) mx = fmaxf(mx, wmax[w]);
    float4 y[MAX_HEAD_DIM / 128];
    #pragma unroll
    for (int k = 0; k < MAX_HEAD_DIM / 128; ++k) y[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    float total = 0.0f;
#pragma unroll 4
    for (u32 sp = warp; sp < A.splits; sp += COMBINE_WARPS) {
        const u64 item = first + (u64)sp * A.group;
        const float ms = pml[2u * item];
        const float e = ms == NEG_INF_F ? 0.0f : __expf(ms - mx);
        total = fmaf(pml[2u * item + 1u], e, total);
        #pragma unroll
        for (int k = 0; k < MAX_HEAD_DIM / 128; ++k) {
            const u32 j = 4u * lane + 128u * (u32)k;
            if (j < d) {
                const float4 a = *(const float4*)(pacc + item * d + j);
                y[k].x = fmaf(a.x, e, y[k].x); y[k].y = fmaf(a.y, e, y[k].y);
                y[k].z = fmaf(a.z, e, y[k].z); y[k].w = fmaf(a.w, e, y[k].w);
            }
        }
    }
    #pragma unroll
    for (int k = 0; k < MAX_HEAD_DIM / 128; ++k) {
        const u32 j = 4u * lane + 128u * (u32)k;
        if (j < d) *(float4*)(red + warp * d + j) = y[k];
    }
    if (lane == 0u) wtot[warp] = total;
    __syncthreads();
    if (warp != 0u) return;
    const Lane L = lane_of(PV);
    const bool active = L.slot && L.seg == 0u;
    float x[8];
    #pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = 0.0f;
    if (active) {
        float t = 0.0f;
        for (u32 w = 0u; w < COMBINE_WARPS; ++w) {
            t += wtot[w];
            #pragma unroll
            for (int j = 0; j < 8; ++j) x[j] += red[w * d + 8u * L.t + (u32)j];
        }
        // Every query sees at least one token, so the total is positive.
        const float inv = 1.0f / t;
        #pragma unroll
        for (int j = 0; j < 8; ++j) x[j] *= inv;
    }
    if (A.rot_v) fwht(PV, L, tabv, x, false, true);
    if (active) {
        float4* o = (float4*)(out + (u64)v * d + 8u * L.t);
        o[0] = make_float4(x[0], x[1], x[2], x[3]);
        o[1] = make_float4(x[4], x[5], x[6], x[7]);
    }
}

// ORs A.count vectors per stream (bit-packed back to back, stream-major: the encoding of a
// [streams, count, d] batch) into their pages at token positions A.start.., one thread per
// 32-bit word of a vector. The pages hold zeros from A.start on.
extern "C" __global__ void kvc_pages_write(const AttnParams A, const unsigned char* packed, unsigned char* pool, const u32* table) {
    const u32 words = (A.bits + 31u) >> 5;
    const u64 gid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 total = (u64)A.streams * A.count * words;
    if (gid >= total) return;
    const u32 w = (u32)(gid % words);
    const u64 i = gid / words;
    const u32 s = (u32)(i / A.count);
    const u32 tok = A.start + (u32)(i % A.count);
    const u32 nb = min(32u, A.bits - 32u * w);
    const u64 src = i * A.bits + 32u * w;
    const u32* pw = (const u32*)packed;
    const u32 val = __funnelshift_r(pw[src >> 5], pw[(src >> 5) + 1u], (u32)(src & 31u)) & low_mask(nb);
    if (val == 0u) return;
    const u32 page = table[(u64)s * A.max_pages + tok / A.page_tokens];
    u32* dst = (u32*)(pool + (u64)page * A.k_stride);
    const u32 pos = (tok % A.page_tokens) * A.bits + 32u * w;
    const u32 off = pos & 31u;
    atomicOr(dst + (pos >> 5), val << off);
    if (off != 0u && nb > 32u - off) atomicOr(dst + (pos >> 5) + 1u, val >> (32u - off));
}
