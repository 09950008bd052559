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
// Int pages of one scale per vector take kvc_attn_mma_<kb><vb>_d<D>_h<H> instead, which does
// the products on the tensor cores (see its section below); both write the same partial states.
// kvc_attn_combine merges the ranges of each query head and rotates the result back.

#define NEG_INF_F __uint_as_float(0xff800000u)

// e^x for the x <= 0 of the softmax (a score less the running maximum): ex2.approx with
// flush to zero, so a weight below 2^-126 of the largest counts as 0 (as the CPU's
// exp_nonpositive drops weights below e^-87), where __expf spends three more instructions
// per weight rescaling subnormal results.
__device__ __forceinline__ float exp_nonpositive(float x) {
#if defined(__CUDA_ARCH__)
    float r;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(r) : "f"(x * 1.44269504088896341f));
    return r;
#else
    // The host emulator (crates/kv-cuda/emu), which compiles these kernels but checks only
    // the codecs, with the same flush.
    const float r = __expf(x);
    return r < 1.17549435e-38f ? 0.0f : r;
#endif
}

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
// Threads per block of the tensor-core partial kernels (attention.rs's MMA_WARPS * 32): two
// warps, so that a block's barriers hold back few warps and more blocks, each a chunk ahead,
// keep memory busy. (Pages of 16 tokens make chunks of one tile, which leave the second warp
// idle; the merge takes its empty state.)
#define MMA_THREADS 64
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
            u32 f;
            s = int_scale_of(code, &f);
            if (f != 0u) *bad = f;
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
    for (u32 i = threadIdx.x; i < k4; i += blockDim.x) copy16_async(buf + 4u * i, kp + c.kw0 + 4u * i);
    for (u32 i = threadIdx.x; i < v4; i += blockDim.x) copy16_async(buf + A.k_words + 4u * i, vp + c.vw0 + 4u * i);
}

// Floats between consecutive tokens' score partials in shared memory: G heads times T
// lanes, padded so that the rows of consecutive tokens fall on other banks (and stay 16-byte
// aligned when T is a multiple of 4, for vector loads). attention.rs sizes the shared memory
// with the same rule.
__device__ __forceinline__ u32 part_stride(u32 G, u32 T) { return G * T + ((T & 3u) == 0u ? 4u : 1u); }

// Runs body(chunk, K words, V words, bit of the chunk's first K vector, of its first V
// vector) over the chunks of tokens [t0, t1) of one stream (its page table `table_s`), each
// staged into one of two shared-memory buffers while the block works on the other: every
// thread of the block calls it, and body runs between two barriers. The page of each chunk
// is looked up two chunks ahead, so that no warp waits on the page table before queueing a
// chunk's copies.
template <class Body>
__device__ __forceinline__ void for_each_chunk(const AttnParams& A, u32 t0, u32 t1, u32 kbits, u32 vbits,
                                               const unsigned char* kpool, const unsigned char* vpool,
                                               const u32* table_s, u32* smem, Body body) {
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
        body(cur, kw, kw + A.k_words, (cur.c0 - cur.p0) * kbits - 32u * cur.kw0, (cur.c0 - cur.p0) * vbits - 32u * cur.vw0);
        __syncthreads();
        cur = next;
        next = after;
        next_page = after_page;
    }
    async_wait(0u);
    __syncthreads();
}

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
    for_each_chunk(A, t0, t1, kbits, vbits, kpool, vpool, table_s, smem, [&](const Chunk& cur, const u32* kw, const u32* vw, u32 kpos0, u32 vpos0) {
        const u32 cnt = cur.c1 - cur.c0;
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
            const float r = m[g] == NEG_INF_F ? 0.0f : exp_nonpositive(m[g] - mn);
            m[g] = mn;
            float sum = 0.0f;
            #pragma unroll
            for (int k = 0; k < MAX_CHUNK_TOKENS / 32; ++k) {
                const u32 tok = L.lane + 32u * (u32)k;
                if (tok < cnt) {
                    const float p = exp_nonpositive(sc[k] - mn);
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
    });
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

// ---- Tensor-core partial kernel: int pages of one scale per vector -------------------------
//
// Pages whose K and V are both the int codec with one scale per vector (4 or 8 bits per
// level, d = 64 or 128) are taken by kvc_attn_mma_<kb><vb>_d<D>_h<H>, which does the products
// on the tensor cores (mma.sync m16n8k16 with f32 accumulation; sm_80 and later): the CUDA-core
// kernels above spend several instructions per value on decoding and products, more than the
// memory system leaves them at 4 bits per value. Levels are small integers, exact in f16 and
// bf16. Scores: each query is scaled by a power of two that brings its largest magnitude to
// [2^14, 2^15) and split into two f16 limbs (22 significant bits; what the smallest limbs lose
// is at most 2^-39 of the largest value); the keys' scales multiply the sums once per token.
// Values: the softmax weights times each value's scale are split into two bf16 limbs (16
// significant bits, f32's exponent range, so no normalisation). The sums are those of f32
// products to within about 2^-16 relative, far inside the 1e-3 the attention is held to.
// A level times a scale can leave f32's range only for scales above about 2^121 (inputs within
// 2^7 of f32's largest value): the CPU saturates such products value by value, this kernel
// does not, so such a token's score or weight may come out infinite where the CPU's is finite.
//
// A warp takes tiles of 16 tokens of the staged chunk (tile i of a chunk by warp i mod W) and
// keeps its own running maxima, sums and value sums; the warps' states are merged at the end
// of the block's range. With g = lane / 4 and c = lane % 4 (mma's fragment coordinates):
//  - scores S[token][head] = K Q^T: A is 16 tokens by 16 dims, B 16 dims by 8 columns: with
//    H = 8, 8 heads (heads past the group are zero) and a product per limb; with H = 4 (GQA
//    groups of at most 4 heads), the 4 heads' high limbs and then their low limbs, one
//    product for both (half the products, and half the registers for the queries). The dims
//    of a k-step need not be consecutive, only the same in A and B: lane c takes its share of every key from the dims c d/4 .. (c+1) d/4, as pairs
//    that a logic operation or a byte permute cuts from a packed word (pair_dims), for tokens
//    g and g + 8;
//  - values O^T[dim][head] += V^T P^T: A is 16 dims by 16 tokens, B 16 tokens by 8 columns
//    laid out as the scores' (the weights times each value's scale, moved from the score
//    layout through shared memory).
//    Lane g takes dims g d/8 .. (g+1) d/8 of tokens 2c, 2c+1, 2c+8, 2c+9: m-tile mt's rows g
//    and g + 8 are that range's dims 2mt and 2mt + 1.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define KVC_TENSOR_CORES 1
#endif

#ifdef KVC_TENSOR_CORES
// c += a b on one m16n8k16 tile, f16 or bf16 inputs.
__device__ __forceinline__ void mma_f16(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_bf16(float c[4], u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two floats as f16 or bf16, rounded to nearest; `lo` in the low half (the smaller fragment
// index).
__device__ __forceinline__ u32 pack_f16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// x0 and x1 as two limbs each, hi + lo (each remainder is exact in f32).
__device__ __forceinline__ void split_f16(float x0, float x1, u32 limb[2]) {
    limb[0] = pack_f16(x0, x1);
    limb[1] = pack_f16(x0 - finite_f16_to_f32(limb[0] & 0xffffu), x1 - finite_f16_to_f32(limb[0] >> 16));
}
__device__ __forceinline__ void split_bf16(float x0, float x1, u32 limb[2]) {
    limb[0] = pack_bf16(x0, x1);
    limb[1] = pack_bf16(x0 - __uint_as_float(limb[0] << 16), x1 - __uint_as_float(limb[0] & 0xffff0000u));
}

// a * b + c on pairs of halves (f16 or bf16), the operands as bits.
__device__ __forceinline__ u32 hfma2_f16(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ u32 hfma2_bf16(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// (x & MASK) | MAGIC in one logic operation: written as two, with both constants immediate,
// ptxas emits an AND and an OR (a LOP3 takes one immediate), two instructions per pair of
// levels in the loops that unpack them.
template <u32 MASK, u32 MAGIC>
__device__ __forceinline__ u32 mask_or(u32 x) {
    u32 r;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(x), "n"(MASK), "n"(MAGIC));
    return r;
}

// Pair j of a lane's share of a key: the two dims (from the share's first) that key_pair's
// halves hold, low half first.
template <int B>
__device__ __forceinline__ void pair_dims(u32 j, u32* lo, u32* hi) {
    if (B == 4) { *lo = 8u * (j / 4u) + j % 4u; *hi = *lo + 4u; }
    else { *lo = 4u * (j / 2u) + 2u * (j % 2u); *hi = *lo + 1u; }
}

// Pair j of a key's levels as f16, from words of levels plus 2^(B-1): 1024 + n is exact in f16
// (0x6400 | n), 1024 + 16 n too (n in bits 4..7), and one fused multiply-add takes the offset
// off (and the 16 out).
template <int B>
__device__ __forceinline__ u32 key_pair(const u32* w, u32 j) {
    if (B == 4) {
        const u32 x = (j & 2u) ? w[j / 4u] >> 8 : w[j / 4u];
        if ((j & 1u) == 0u) return hfma2_f16(mask_or<0x000f000fu, 0x64006400u>(x), 0x3c003c00u, 0xe408e408u);  // 1, -1032
        return hfma2_f16(mask_or<0x00f000f0u, 0x64006400u>(x), 0x2c002c00u, 0xd480d480u);                     // 1/16, -72
    }
    return hfma2_f16(__byte_perm(w[j / 2u], 0x64646464u, (j & 1u) ? 0x4342u : 0x4140u), 0x3c003c00u, 0xe480e480u);  // 1, -1152
}

// Byte k of x (a level plus 128) as the level, exactly: 2^23 + byte, less 2^23 + 128.
__device__ __forceinline__ float byte_level(u32 x, u32 k) {
    return __uint_as_float(__byte_perm(x, 0x4b000000u, 0x7540u | k)) - 8388736.0f;
}

// Dim o of a lane's share of two values (words a and b of levels plus 2^(B-1)), as the bf16
// pair (a's, b's): 128 + n is exact in bf16 (0x4300 | n) for a 4-bit n.
template <int B>
__device__ __forceinline__ u32 value_pair(const u32* a, const u32* b, u32 o) {
    if (B == 4) {
        const u32 i = o / 8u, k = o % 8u;
        const u32 x = __byte_perm(a[i], b[i], k < 4u ? 0x5410u : 0x7632u) >> (4u * (k % 4u));
        return hfma2_bf16(mask_or<0x000f000fu, 0x43004300u>(x), 0x3f803f80u, 0xc308c308u);  // 1, -136
    }
    const u32 i = o / 4u, k = o % 4u;
    return pack_bf16(byte_level(a[i], k), byte_level(b[i], k));
}

// N words of levels from bit `pos` of staged words `w`, their top bits flipped (so a field is
// its level plus 2^(B-1)); ORs into *zeros what has_low_level tests.
template <int B, int N>
__device__ __forceinline__ void level_words(const u32* w, u32 pos, u32 out[N], u32* zeros) {
    const u32* p = w + (pos >> 5);
    const u32 sh = pos & 31u;
    u32 lo = p[0];
    #pragma unroll
    for (int i = 0; i < N; ++i) {
        const u32 hi = p[i + 1];
        out[i] = __funnelshift_r(lo, hi, sh) ^ (B == 4 ? 0x88888888u : 0x80808080u);
        *zeros |= (out[i] - (B == 4 ? 0x11111111u : 0x01010101u)) & ~out[i];
        lo = hi;
    }
}

// Whether words given to level_words held the level no encoder writes (the lowest, now a zero
// field): the zero-field test of bit twiddling, for fields of B bits.
template <int B>
__device__ __forceinline__ bool has_low_level(u32 zeros) {
    return (zeros & (B == 4 ? 0x88888888u : 0x80808080u)) != 0u;
}
#endif

template <int KB, int VB, int D, int H>
__device__ __forceinline__ void attn_mma(const AttnParams& A, const float* qrot, const unsigned char* kpool,
                                         const unsigned char* vpool, const u32* table, float* pacc, float* pml,
                                         u64* status) {
#ifdef KVC_TENSOR_CORES
    extern __shared__ u32 smem[];
    constexpr u32 STEPS = D / 16;          // k-steps of a key tile; m-tiles of a value tile
    constexpr u32 KW = D * KB / 128;       // words of a lane's share of a key (d/4 levels)
    constexpr u32 VW = D * VB / 256;       // words of a lane's share of a value (d/8 levels)
    // Bits of a key and of a value, a scale and d levels (the plans' bits: plan_call picks
    // these kernels only for one scale per vector).
    constexpr u32 KBITS = 16u + D * KB;
    constexpr u32 VBITS = 16u + D * VB;
    const u32 lane = threadIdx.x & 31u, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    const u32 g = lane >> 2, c = lane & 3u;
    const u32 stream = blockIdx.y, split = blockIdx.x;
    const u32 b = stream / A.kv_heads, h = stream % A.kv_heads;
    const u32 t0 = split * A.split;
    const u32 t1 = min(t0 + A.split, A.len);
    // The weights of a tile on their way from the score layout to the value layout: 16 tokens
    // by 8 heads per warp, after the staging buffers.
    float* wt = (float*)(smem + 2u * A.stage_words) + 128u * warp;
    // B of the scores: a head's query times 2^k at the dims of pairs 2s and 2s + 1 of lane c's
    // share, as f16 limbs. H = 8: column g of B holds head g, and each limb takes a product of
    // its own. H = 4 (groups of at most four heads): column g holds limb g / 4 of head g % 4,
    // so that one product takes both limbs (half the products), whose sums meet in lanes c
    // and c ^ 2. unscale0/1 = 2^-k of the heads of the lane's score columns, 2c and 2c + 1
    // (H = 4: 2(c % 2) and 2(c % 2) + 1; lanes c and c ^ 2 then hold the same heads).
    constexpr bool H4 = H == 4;
    constexpr u32 LIMBS = H4 ? 1u : 2u;
    u32 qf[STEPS][2][LIMBS];
    float unscale0, unscale1;
    {
        const u32 head = H4 ? g & 3u : g;
        const bool real = head < A.group;
        const float* q = qrot + (u64)(b * A.q_heads + h * A.group + (real ? head : 0u)) * D + c * (D / 4u);
        float x[D / 4u];
        float top = 0.0f;
        #pragma unroll
        for (u32 i = 0u; i < D / 4u; ++i) {
            x[i] = real ? q[i] : 0.0f;
            top = fmaxf(top, fabsf(x[i]));
        }
        top = fmaxf(top, shfl_xor_f(top, 1u));
        top = fmaxf(top, shfl_xor_f(top, 2u));
        // 2^(141 - e) for a largest magnitude of biased exponent e puts it in [2^14, 2^15);
        // below e = 14 (and for zero) 2^127, which leaves it smaller.
        const u32 e = __float_as_uint(top) >> 23;
        const float up = __uint_as_float(min(268u - min(e, 268u), 254u) << 23);
        #pragma unroll
        for (u32 j = 0u; j < 2u * STEPS; ++j) {
            u32 lo, hi;
            pair_dims<KB>(j, &lo, &hi);
            u32 limb[2];
            split_f16(x[lo] * up, x[hi] * up, limb);
            if (H4) qf[j / 2u][j % 2u][0] = (g & 4u) ? limb[1] : limb[0];
            else {
                qf[j / 2u][j % 2u][0] = limb[0];
                qf[j / 2u][j % 2u][LIMBS - 1u] = limb[1];
            }
        }
        const float down = 1.0f / up;
        const u32 c0 = H4 ? c & 1u : c;
        unscale0 = shfl_f(down, 8u * c0);
        unscale1 = shfl_f(down, 8u * c0 + 4u);
    }
    // Running maxima and sums of the heads of columns 2c and 2c + 1 (the sums are this lane's
    // tokens'; the maxima are the warp's), and the value sums (C of m-tile mt: dims 2mt and
    // 2mt + 1 of lane g's range, columns 2c and 2c + 1: with H = 4, lanes c >= 2 hold the
    // low limbs' share).
    float m0 = NEG_INF_F, m1 = NEG_INF_F, l0 = 0.0f, l1 = 0.0f;
    float o[STEPS][4];
    #pragma unroll
    for (u32 mt = 0u; mt < STEPS; ++mt) o[mt][0] = o[mt][1] = o[mt][2] = o[mt][3] = 0.0f;
    u32 bad = 0u, bad_tok = 0xffffffffu;
    const u32* table_s = table + (u64)stream * A.max_pages;
    for_each_chunk(A, t0, t1, KBITS, VBITS, kpool, vpool, table_s, smem, [&](const Chunk& cur, const u32* kw, const u32* vw, u32 kpos0, u32 vpos0) {
        const u32 cnt = cur.c1 - cur.c0;
#pragma unroll 1
        for (u32 tb = 16u * warp; tb < cnt; tb += 16u * W) {
            // Scores of tokens tb + g and tb + g + 8 for heads 2c and 2c + 1, summed in four
            // accumulators so that no long chain of dependent mma waits on itself.
            float acc[4][4];
            #pragma unroll
            for (u32 i = 0u; i < 4u; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
            // The scales of tokens g and g + 8, K's then V's: lane c of the quad decodes scale c
            // (an escape as 0, a negative scale as it is) and passes it round.
            float ks[2], vs[2];
            u32 scale_fault;
            {
                const u32 tok = tb + g + 8u * (c & 1u);
                const bool key = c < 2u;
                const float mine = int_scale_of(page_bits(key ? kw : vw, key ? kpos0 + tok * KBITS : vpos0 + tok * VBITS, 16u), &scale_fault);
                ks[0] = shfl_f(mine, 4u * g);
                ks[1] = shfl_f(mine, 4u * g + 1u);
                vs[0] = shfl_f(mine, 4u * g + 2u);
                vs[1] = shfl_f(mine, 4u * g + 3u);
            }
            bool valid[2];
            u32 kl[2][KW], kzeros[2];
            #pragma unroll
            for (u32 r = 0u; r < 2u; ++r) {
                const u32 tok = tb + g + 8u * r;
                valid[r] = tok < cnt;
                kzeros[r] = 0u;
                level_words<KB, KW>(kw, kpos0 + tok * KBITS + 16u + c * (D / 4u) * KB, kl[r], &kzeros[r]);
            }
            // Faults are rare: one vote per tile; the quad's scale faults are passed round and
            // the bookkeeping done only in a tile that has a fault. A token's fault is its V
            // scale's, else its K levels', else its K scale's.
            if (__any_sync(FULL_MASK, scale_fault != 0u || has_low_level<KB>(kzeros[0] | kzeros[1]))) {
                u32 fault[4];
                #pragma unroll
                for (u32 i = 0u; i < 4u; ++i) fault[i] = shfl_u(scale_fault, 4u * g + i);
                #pragma unroll
                for (u32 r = 0u; r < 2u; ++r) {
                    const u32 tok = tb + g + 8u * r;
                    const u32 tf = fault[2u + r] != 0u ? fault[2u + r] : has_low_level<KB>(kzeros[r]) ? FAULT_INT_LEVEL : fault[r];
                    if (tf != 0u && valid[r] && cur.c0 + tok < bad_tok) { bad = tf; bad_tok = cur.c0 + tok; }
                }
            }
            #pragma unroll
            for (u32 s = 0u; s < STEPS; ++s) {
                const u32 a0 = key_pair<KB>(kl[0], 2u * s), a1 = key_pair<KB>(kl[1], 2u * s);
                const u32 a2 = key_pair<KB>(kl[0], 2u * s + 1u), a3 = key_pair<KB>(kl[1], 2u * s + 1u);
                if (H4) mma_f16(acc[s % 4u], a0, a1, a2, a3, qf[s][0][0], qf[s][1][0]);
                else {
                    mma_f16(acc[(2u * s) % 4u], a0, a1, a2, a3, qf[s][0][0], qf[s][1][0]);
                    mma_f16(acc[(2u * s + 1u) % 4u], a0, a1, a2, a3, qf[s][0][LIMBS - 1u], qf[s][1][LIMBS - 1u]);
                }
            }
            #pragma unroll
            for (u32 i = 0u; i < 4u; ++i) {
                acc[0][i] = (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]);
                if (H4) acc[0][i] += shfl_xor_f(acc[0][i], 2u);
            }
            const float k0 = ks[0] * unscale0, k1 = ks[0] * unscale1, k2 = ks[1] * unscale0, k3 = ks[1] * unscale1;
            const float s00 = valid[0] ? acc[0][0] * k0 : NEG_INF_F, s01 = valid[0] ? acc[0][1] * k1 : NEG_INF_F;
            const float s10 = valid[1] ? acc[0][2] * k2 : NEG_INF_F, s11 = valid[1] ? acc[0][3] * k3 : NEG_INF_F;
            // The running maxima change only when a score of the tile passes them (on the
            // first tiles, then rarely): only then does the warp reduce the tile's maxima and
            // rescale its sums. Otherwise every factor would be exp(0) = 1, so the sums are
            // the same either way.
            float x0 = fmaxf(s00, s10), x1 = fmaxf(s01, s11);
            if (__any_sync(FULL_MASK, x0 > m0 || x1 > m1)) {
                #pragma unroll
                for (u32 k = 4u; k < 32u; k <<= 1) {
                    x0 = fmaxf(x0, shfl_xor_f(x0, k));
                    x1 = fmaxf(x1, shfl_xor_f(x1, k));
                }
                // Token tb is in the chunk, so both maxima are finite (but for the scales above
                // 2^121 of the section's comment).
                const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);
                const float r0 = exp_nonpositive(m0 - n0), r1 = exp_nonpositive(m1 - n1);
                m0 = n0;
                m1 = n1;
                l0 *= r0;
                l1 *= r1;
                #pragma unroll
                for (u32 mt = 0u; mt < STEPS; ++mt) {
                    o[mt][0] *= r0; o[mt][1] *= r1; o[mt][2] *= r0; o[mt][3] *= r1;
                }
            }
            const float p00 = exp_nonpositive(s00 - m0), p01 = exp_nonpositive(s01 - m1), p10 = exp_nonpositive(s10 - m0), p11 = exp_nonpositive(s11 - m1);
            l0 += p00 + p10;
            l1 += p01 + p11;
            // The weights times the values' scales, tokens by heads, then read back as B of the
            // value product (tokens 2c, 2c + 1 and 2c + 8, 2c + 9 of column g's head).
            wt[8u * g + 2u * c] = valid[0] ? p00 * vs[0] : 0.0f;
            wt[8u * g + 2u * c + 1u] = valid[0] ? p01 * vs[0] : 0.0f;
            wt[8u * (g + 8u) + 2u * c] = valid[1] ? p10 * vs[1] : 0.0f;
            wt[8u * (g + 8u) + 2u * c + 1u] = valid[1] ? p11 * vs[1] : 0.0f;
            __syncwarp();
            u32 pb0[2], pb1[2];
            const u32 col = H4 ? g & 3u : g;
            split_bf16(wt[8u * (2u * c) + col], wt[8u * (2u * c + 1u) + col], pb0);
            split_bf16(wt[8u * (2u * c + 8u) + col], wt[8u * (2u * c + 9u) + col], pb1);
            __syncwarp();
            // Values: lane g's dims of tokens 2c, 2c + 1, 2c + 8, 2c + 9.
            u32 vl[4][VW], vzeros[4];
            #pragma unroll
            for (u32 r = 0u; r < 4u; ++r) {
                const u32 tok = tb + 2u * c + (r & 1u) + 8u * (r >> 1);
                vzeros[r] = 0u;
                level_words<VB, VW>(vw, vpos0 + tok * VBITS + 16u + g * (D / 8u) * VB, vl[r], &vzeros[r]);
            }
            if (__any_sync(FULL_MASK, has_low_level<VB>((vzeros[0] | vzeros[1]) | (vzeros[2] | vzeros[3])))) {
                #pragma unroll
                for (u32 r = 0u; r < 4u; ++r) {
                    const u32 tok = tb + 2u * c + (r & 1u) + 8u * (r >> 1);
                    if (has_low_level<VB>(vzeros[r]) && tok < cnt && cur.c0 + tok < bad_tok) { bad = FAULT_INT_LEVEL; bad_tok = cur.c0 + tok; }
                }
            }
            #pragma unroll
            for (u32 mt = 0u; mt < STEPS; ++mt) {
                const u32 a0 = value_pair<VB>(vl[0], vl[1], 2u * mt), a1 = value_pair<VB>(vl[0], vl[1], 2u * mt + 1u);
                const u32 a2 = value_pair<VB>(vl[2], vl[3], 2u * mt), a3 = value_pair<VB>(vl[2], vl[3], 2u * mt + 1u);
                if (H4) mma_bf16(o[mt], a0, a1, a2, a3, (g & 4u) ? pb0[1] : pb0[0], (g & 4u) ? pb1[1] : pb1[0]);
                else {
                    mma_bf16(o[mt], a0, a1, a2, a3, pb0[0], pb1[0]);
                    mma_bf16(o[mt], a0, a1, a2, a3, pb0[1], pb1[1]);
                }
            }
        }
    });
    if (bad != 0u) fault(status, bad_tok, 0u, bad);
    // Merge the warps: each writes its maxima, sums and value sums (over the staging
    // buffers), then the block's threads combine them per head and dim.
    #pragma unroll
    for (u32 k = 4u; k < 32u; k <<= 1) {
        l0 += shfl_xor_f(l0, k);
        l1 += shfl_xor_f(l1, k);
    }
    float* wm = (float*)smem;
    float* wl = wm + 8u * W;
    float* wo = wl + 8u * W;
    // With H4, lanes c and c ^ 2 hold the same heads: the high limbs' value sums meet the low
    // ones' in lanes c < 2, which write them.
    if (H4) {
        #pragma unroll
        for (u32 mt = 0u; mt < STEPS; ++mt) {
            #pragma unroll
            for (u32 i = 0u; i < 4u; ++i) o[mt][i] += shfl_xor_f(o[mt][i], 2u);
        }
    }
    const bool writer = !H4 || c < 2u;
    if (g == 0u && writer) {
        wm[8u * warp + 2u * c] = m0; wm[8u * warp + 2u * c + 1u] = m1;
        wl[8u * warp + 2u * c] = l0; wl[8u * warp + 2u * c + 1u] = l1;
    }
    if (writer) {
        #pragma unroll
        for (u32 mt = 0u; mt < STEPS; ++mt) {
            const u32 dim = g * (D / 8u) + 2u * mt;
            float* w0 = wo + (8u * warp + 2u * c) * D + dim;
            w0[0] = o[mt][0]; w0[D] = o[mt][1]; w0[1] = o[mt][2]; w0[D + 1u] = o[mt][3];
        }
    }
    __syncthreads();
    for (u32 idx = threadIdx.x; idx < A.group * D; idx += blockDim.x) {
        const u32 hd = idx / D, j = idx % D;
        float mx = NEG_INF_F;
        for (u32 w = 0u; w < W; ++w) mx = fmaxf(mx, wm[8u * w + hd]);
        float at = 0.0f, tot = 0.0f;
        for (u32 w = 0u; w < W; ++w) {
            const float mw = wm[8u * w + hd];
            const float e = mw == NEG_INF_F ? 0.0f : exp_nonpositive(mw - mx);
            at = fmaf(wo[(8u * w + hd) * D + j], e, at);
            tot = fmaf(wl[8u * w + hd], e, tot);
        }
        const u64 item = ((u64)stream * A.splits + split) * A.group + hd;
        pacc[item * D + j] = at;
        if (j == 0u) { pml[2u * item] = mx; pml[2u * item + 1u] = tot; }
    }
#elif defined(__CUDA_ARCH__)
    // plan_call picks these kernels only for sm_80 on; launched on an older GPU, they stop
    // rather than leave the partial states unwritten.
    asm volatile("trap;\n");
#endif
}

#define ATTN_MMA(KB, VB, D, H)                                                                                    \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS) kvc_attn_mma_##KB##VB##_d##D##_h##H(               \
        const Params PK, const Params PV, const AttnParams A, const float* qrot, const unsigned char* kpool,      \
        const unsigned char* vpool, const u32* table, const u32* tabk, const u32* tabv, float* pacc, float* pml, \
        u64* status) {                                                                                            \
        attn_mma<KB, VB, D, H>(A, qrot, kpool, vpool, table, pacc, pml, status);                                  \
    }
#define ATTN_MMAS(D, H) ATTN_MMA(4, 4, D, H) ATTN_MMA(4, 8, D, H) ATTN_MMA(8, 4, D, H) ATTN_MMA(8, 8, D, H)
ATTN_MMAS(64, 4)
ATTN_MMAS(64, 8)
ATTN_MMAS(128, 4)
ATTN_MMAS(128, 8)

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
        const float e = ms == NEG_INF_F ? 0.0f : exp_nonpositive(ms - mx);
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
