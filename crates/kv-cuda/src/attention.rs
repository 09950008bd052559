//! Decode attention on packed pages, as plain data: the layout of a layer's page pools
//! ([`PagesShape`], [`PageLayout`]), which codecs the attention kernels decode, and the
//! geometry of one call (ranges of tokens per warp, launch grids, scratch sizes). Nothing
//! here touches a device.

use crate::error::Error;
use crate::params::AttnParams;
use crate::plan::{KernelCodec, Plan};
use crate::source::ATTENTION_KERNELS as PARTIAL_KERNELS;

/// Most query heads per KV head (the GQA group) the attention kernels take.
pub const MAX_GROUP: usize = 8;

/// Pages of a pool start on multiples of this many bytes.
pub const PAGE_ALIGN: usize = 16;

/// Largest chunk of tokens a block stages at once (attention.cu's MAX_CHUNK_TOKENS).
const MAX_CHUNK: usize = 128;

/// Smallest chunk.
const MIN_CHUNK: usize = 16;

/// Shared memory a block of the partial kernel may take, in bytes (the most a launch gets
/// without opting in).
const SHARED_BUDGET: usize = 48 * 1024;

/// Thread blocks a call aims to spread its work over (enough to fill a large GPU several
/// times over).
const TARGET_BLOCKS: usize = 1024;

/// Warps per block of the partial kernel (attention.cu's ATTN_THREADS / 32).
const PARTIAL_WARPS: u32 = 4;

/// Warps per block of the tensor-core partial kernels (attention.cu's MMA_THREADS / 32).
const MMA_WARPS: u32 = 2;

/// Words of one staging buffer for chunks of `chunk` vectors of `bits` bits: the chunk's
/// bits from a 16-byte boundary below its first bit to one word past its last, in whole
/// 16-byte units (see `stage` in attention.cu).
fn stage_words(chunk: usize, bits: u32) -> usize {
    ((chunk * bits as usize).div_ceil(32) + 8).next_multiple_of(4)
}

/// Floats between consecutive tokens' score partials in the partial kernel's shared memory
/// (`part_stride` in attention.cu): `group · lanes` (lanes = head_dim / 8), padded.
fn part_stride(group: usize, lanes: usize) -> usize {
    group * lanes + if lanes.is_multiple_of(4) { 4 } else { 1 }
}

/// Bytes of shared memory of a block of the partial kernel (G = `group` stamped query heads,
/// vectors of `d` values): while it runs, two staging buffers of `k_words + v_words` words,
/// the queries, the score partials and weights of a chunk of `chunk` tokens and G rescale
/// factors; at the end, 16 floats of maxima and sums and every vector slot's G × d sums.
fn partial_shared_bytes(
    group: usize,
    d: usize,
    chunk: usize,
    k_words: usize,
    v_words: usize,
) -> usize {
    let lanes = d / 8;
    let slots = PARTIAL_WARPS as usize * (32 / lanes);
    let running = 8 * (k_words + v_words)
        + 4 * (group * d + chunk * part_stride(group, lanes) + chunk * group + group);
    running.max(4 * (16 + slots * group * d))
}

/// Bytes of shared memory of a block of the tensor-core partial kernel (`kvc_attn_mma_*`):
/// while it runs, two staging buffers and each warp's 16 × 8 weights; at the end, each
/// warp's 8 maxima, 8 sums and 8 × d value sums.
fn mma_shared_bytes(d: usize, k_words: usize, v_words: usize) -> usize {
    let warps = MMA_WARPS as usize;
    (8 * (k_words + v_words) + warps * 16 * 8 * 4).max(4 * warps * (16 + 8 * d))
}

/// Bits per level when `plan` is a codec the tensor-core kernels decode: the int codec with
/// 4 or 8 bits per level, one scale per vector, and head_dim 64 or 128.
fn tensor_core_bits(plan: &Plan) -> Option<u32> {
    match plan.codec() {
        KernelCodec::Int {
            head_dim,
            bits,
            group,
        } if group == head_dim && matches!(bits, 4 | 8) && matches!(head_dim, 64 | 128) => {
            Some(*bits)
        }
        _ => None,
    }
}

/// Threads per block of the query kernel.
const VECTOR_THREADS: u32 = 256;

/// Threads per block of the combine kernel (one block per query vector; attention.cu's
/// COMBINE_WARPS warps).
const COMBINE_THREADS: u32 = 128;

/// Threads per block of the page writer.
const WRITE_THREADS: u32 = 256;

/// The shape of a layer's pages: streams (batch rows × KV heads) of up to `max_pages`
/// pages of `page_tokens` tokens each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagesShape {
    /// Batch rows.
    pub batch: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Tokens per page.
    pub page_tokens: usize,
    /// Pages per stream (the capacity is `max_pages · page_tokens` tokens).
    pub max_pages: usize,
}

impl PagesShape {
    /// Streams: `batch · kv_heads`.
    pub fn streams(&self) -> usize {
        self.batch * self.kv_heads
    }

    /// Tokens each stream can hold.
    pub fn capacity(&self) -> usize {
        self.max_pages * self.page_tokens
    }

    /// Checks that every size fits the kernels' 32-bit fields.
    pub(crate) fn check(&self) -> Result<(), Error> {
        let limit = u32::MAX as u64;
        for (what, value) in [
            ("batch", self.batch),
            ("kv_heads", self.kv_heads),
            ("page_tokens", self.page_tokens),
            ("max_pages", self.max_pages),
        ] {
            if value == 0 || value as u64 > limit {
                return Err(Error::Unsupported {
                    what,
                    value: value as u64,
                    supported: "1..=2^32-1",
                });
            }
        }
        let pages = (self.streams() as u64).checked_mul(self.max_pages as u64);
        if self.capacity() as u64 > limit || pages.is_none_or(|p| p > limit) {
            return Err(Error::Unsupported {
                what: "pages",
                value: pages.unwrap_or(u64::MAX),
                supported: "below 2^32 pages in a pool and 2^32 tokens per stream",
            });
        }
        Ok(())
    }
}

/// How one of K or V of a layer lies in its pool: pages of `page_tokens` vectors of `bits`
/// bits, back to back (exactly the bytes of kv-codec's cache pages), each page starting on
/// a multiple of [`PAGE_ALIGN`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLayout {
    /// Tokens per page.
    pub page_tokens: usize,
    /// Bits per vector.
    pub bits: u32,
}

impl PageLayout {
    /// Bytes of one page's payload: ⌈page_tokens · bits / 8⌉.
    pub fn page_bytes(&self) -> usize {
        (self.page_tokens * self.bits as usize).div_ceil(8)
    }

    /// Bytes from one page of the pool to the next.
    pub fn stride(&self) -> usize {
        self.page_bytes().next_multiple_of(PAGE_ALIGN)
    }
}

/// Checks that the attention kernels decode `plan`'s codec.
pub(crate) fn check_codec(plan: &Plan) -> Result<(), Error> {
    match plan.codec() {
        KernelCodec::Voronoi { q, alphas, .. }
            if !(q.is_power_of_two() && alphas.len().is_power_of_two()) =>
        {
            Err(Error::Unsupported {
                what: "voronoi q",
                value: u64::from(*q),
                supported: "attention on pages needs the raw packing (q and the number of scales powers of two)",
            })
        }
        KernelCodec::Compat { q, .. } => Err(Error::Unsupported {
            what: "compat q",
            value: u64::from(*q),
            supported: "attention on pages decodes voronoi-e8, turboquant, fp8-e4m3, int and bf16",
        }),
        _ => Ok(()),
    }
}

/// Whether a codec quantises in a rotated domain (then queries are rotated into it and
/// outputs rotated back).
pub(crate) fn rotated(plan: &Plan) -> bool {
    matches!(
        plan.codec(),
        KernelCodec::Voronoi { .. } | KernelCodec::TurboQuant { .. }
    )
}

/// One attention call, laid out: parameter block, grids and scratch sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttentionCall {
    /// The parameter block.
    pub params: AttnParams,
    /// The partial kernel's entry point (by the codec families of K and V and the group
    /// size).
    pub partial_kernel: &'static str,
    /// Blocks of the query kernel (one vector per lane segment).
    pub vector_grid: u32,
    /// Threads per block of the query kernel.
    pub vector_block: u32,
    /// Blocks of the combine kernel (one per query vector).
    pub combine_grid: u32,
    /// Threads per block of the combine kernel.
    pub combine_block: u32,
    /// Dynamic shared memory per block of the combine kernel, in bytes.
    pub combine_shared: u32,
    /// Grid of the partial kernel: (blocks of ranges per stream, streams).
    pub partial_grid: (u32, u32),
    /// Threads per block of the partial kernel.
    pub partial_block: u32,
    /// Dynamic shared memory per block of the partial kernel, in bytes.
    pub partial_shared: u32,
    /// Floats of the rotated queries.
    pub query_floats: usize,
    /// Floats of the partial sums (`streams · splits · group · head_dim`).
    pub acc_floats: usize,
    /// Floats of the partial maxima and sums (`streams · splits · group · 2`).
    pub ml_floats: usize,
}

/// Lays out decode attention of `q_heads` query heads per batch row over the first `len`
/// tokens of every stream. With `tensor_cores` (compute capability 8.0 on), pages whose K
/// and V are both int with one scale per vector (4 or 8 bits, head_dim 64 or 128) go to the
/// tensor-core partial kernels.
///
/// # Errors
/// [`Error::Unsupported`] for a codec the attention kernels do not decode, a group above
/// [`MAX_GROUP`] or mismatched head dimensions; [`Error::HeadsMismatch`] when `q_heads` is
/// not a multiple of the KV heads; [`Error::TooManyTokens`] beyond the pages' capacity or
/// for `len = 0`.
pub fn plan_call(
    k: &Plan,
    v: &Plan,
    shape: PagesShape,
    len: usize,
    q_heads: usize,
    tensor_cores: bool,
) -> Result<AttentionCall, Error> {
    shape.check()?;
    check_codec(k)?;
    check_codec(v)?;
    let d = k.head_dim();
    if v.head_dim() != d {
        return Err(Error::Unsupported {
            what: "value head_dim",
            value: v.head_dim() as u64,
            supported: "the keys' head_dim",
        });
    }
    if q_heads == 0 || !q_heads.is_multiple_of(shape.kv_heads) {
        return Err(Error::HeadsMismatch {
            q_heads,
            kv_heads: shape.kv_heads,
        });
    }
    let group = q_heads / shape.kv_heads;
    if group > MAX_GROUP {
        return Err(Error::Unsupported {
            what: "query heads per KV head",
            value: group as u64,
            supported: "1..=8",
        });
    }
    if len == 0 || len > shape.capacity() {
        return Err(Error::TooManyTokens {
            tokens: len,
            capacity: shape.capacity(),
        });
    }
    let streams = shape.streams();
    let vectors = shape.batch * q_heads;
    if vectors > u32::MAX as usize / 32 {
        return Err(Error::Unsupported {
            what: "query vectors",
            value: vectors as u64,
            supported: "below 2^27",
        });
    }
    let (kb, vb) = (k.bits_per_vector(), v.bits_per_vector());
    let g = match group {
        1 => 1,
        2 => 2,
        3 | 4 => 4,
        _ => 8,
    };
    let mma_bits = match (tensor_core_bits(k), tensor_core_bits(v)) {
        (Some(kbits), Some(vbits)) if tensor_cores => Some((kbits, vbits)),
        _ => None,
    };
    // Chunks never straddle pages, so none is larger than a page needs.
    let shared = |chunk| {
        let (k_words, v_words) = (stage_words(chunk, kb), stage_words(chunk, vb));
        match mma_bits {
            Some(_) => mma_shared_bytes(d, k_words, v_words),
            None => partial_shared_bytes(g, d, chunk, k_words, v_words),
        }
    };
    let mut chunk = MAX_CHUNK.min(shape.page_tokens.next_power_of_two().max(MIN_CHUNK));
    while chunk > MIN_CHUNK && shared(chunk) > SHARED_BUDGET {
        chunk /= 2;
    }
    let (k_words, v_words) = (stage_words(chunk, kb), stage_words(chunk, vb));
    let split = (len * streams)
        .div_ceil(TARGET_BLOCKS)
        .max(chunk)
        .next_multiple_of(chunk);
    let splits = len.div_ceil(split);
    let partial_shared = shared(chunk);
    let k_layout = PageLayout {
        page_tokens: shape.page_tokens,
        bits: k.bits_per_vector(),
    };
    let v_layout = PageLayout {
        page_tokens: shape.page_tokens,
        bits: v.bits_per_vector(),
    };
    let mut p = AttnParams::zeroed();
    p.set("batch", shape.batch as u32);
    p.set("kv_heads", shape.kv_heads as u32);
    p.set("q_heads", q_heads as u32);
    p.set("group", group as u32);
    p.set("streams", streams as u32);
    p.set("len", len as u32);
    p.set_f32("scale", 1.0 / (d as f32).sqrt());
    p.set("rot_k", u32::from(rotated(k)));
    p.set("rot_v", u32::from(rotated(v)));
    p.set("page_tokens", shape.page_tokens as u32);
    p.set("max_pages", shape.max_pages as u32);
    p.set("k_stride", k_layout.stride() as u32);
    p.set("v_stride", v_layout.stride() as u32);
    p.set("split", split as u32);
    p.set("splits", splits as u32);
    p.set("chunk", chunk as u32);
    p.set("k_words", k_words as u32);
    p.set("stage_words", (k_words + v_words) as u32);
    let per_block = (VECTOR_THREADS / 32) as usize * (32 / (d / 8));
    let family = |plan: &Plan| match plan.codec() {
        KernelCodec::Voronoi { .. } => "v",
        _ => "s",
    };
    let name = match mma_bits {
        // Groups of at most four heads take both limbs of a query in one product.
        Some((kbits, vbits)) => {
            let heads = if group <= 4 { 4 } else { 8 };
            format!("kvc_attn_mma_{kbits}{vbits}_d{d}_h{heads}")
        }
        None => format!("kvc_attn_partial_{}{}_g{g}", family(k), family(v)),
    };
    let partial_kernel = PARTIAL_KERNELS
        .iter()
        .find(|kernel| **kernel == name)
        .copied()
        .expect("every family pair and group, and every tensor-core pair, has a kernel");
    Ok(AttentionCall {
        params: p,
        partial_kernel,
        vector_grid: vectors.div_ceil(per_block) as u32,
        vector_block: VECTOR_THREADS,
        combine_grid: vectors as u32,
        combine_block: COMBINE_THREADS,
        combine_shared: 4 * (COMBINE_THREADS / 32) * (d as u32 + 2),
        partial_grid: (splits as u32, streams as u32),
        partial_block: 32
            * if mma_bits.is_some() {
                MMA_WARPS
            } else {
                PARTIAL_WARPS
            },
        partial_shared: partial_shared as u32,
        query_floats: vectors * d,
        acc_floats: streams * splits * group * d,
        ml_floats: streams * splits * group * 2,
    })
}

/// The launch of the page writer: `count` vectors per stream, packed back to back
/// stream-major, written at positions `start..start + count` of every stream's pages of
/// `layout`. Returns the parameter block and the grid (`None` when there is nothing to
/// write).
///
/// # Errors
/// [`Error::TooManyTokens`] past the pages' capacity.
pub fn plan_write(
    shape: PagesShape,
    layout: PageLayout,
    start: usize,
    count: usize,
) -> Result<Option<(AttnParams, u32, u32)>, Error> {
    shape.check()?;
    let end = start.saturating_add(count);
    if end > shape.capacity() {
        return Err(Error::TooManyTokens {
            tokens: end,
            capacity: shape.capacity(),
        });
    }
    if count == 0 {
        return Ok(None);
    }
    let threads = (shape.streams() * count) as u64 * u64::from(layout.bits.div_ceil(32));
    let blocks = threads.div_ceil(u64::from(WRITE_THREADS));
    if blocks > u64::from(u32::MAX) {
        return Err(Error::BatchTooLarge {
            vectors: shape.streams() * count,
            limit: u32::MAX as usize,
        });
    }
    let mut p = AttnParams::zeroed();
    p.set("streams", shape.streams() as u32);
    p.set("page_tokens", shape.page_tokens as u32);
    p.set("max_pages", shape.max_pages as u32);
    p.set("k_stride", layout.stride() as u32);
    p.set("count", count as u32);
    p.set("start", start as u32);
    p.set("bits", layout.bits);
    Ok(Some((p, blocks as u32, WRITE_THREADS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voronoi(q: u32, scales: usize) -> Plan {
        Plan::new(KernelCodec::Voronoi {
            head_dim: 128,
            seed: 1,
            q,
            fill_q: 5.0,
            alphas: vec![1.0; scales],
        })
        .unwrap()
    }

    fn shape(batch: usize) -> PagesShape {
        PagesShape {
            batch,
            kv_heads: 8,
            page_tokens: 64,
            max_pages: 2048,
        }
    }

    #[test]
    fn pages_start_aligned() {
        let l = PageLayout {
            page_tokens: 64,
            bits: 555,
        };
        assert_eq!((l.page_bytes(), l.stride()), (4440, 4448));
    }

    #[test]
    fn calls_split_long_contexts_over_many_warps() {
        let k = voronoi(16, 4);
        let c = plan_call(&k, &k, shape(1), 32768, 32, true).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_partial_vv_g4");
        let (split, splits) = (c.params.get("split"), c.params.get("splits"));
        // Chunks are no larger than a page (64 tokens here).
        assert_eq!(c.params.get("chunk"), 64);
        assert_eq!(split % 64, 0);
        assert_eq!(splits as usize, 32768usize.div_ceil(split as usize));
        assert!(splits as usize * 8 >= TARGET_BLOCKS / 2);
        assert!(c.partial_shared as usize <= 48 * 1024);
        assert_eq!(c.acc_floats, 8 * splits as usize * 4 * 128);
        assert_eq!(c.params.get("rot_k"), 1);
        // Short contexts still take a whole chunk.
        let c = plan_call(&k, &k, shape(8), 5, 32, true).unwrap();
        assert_eq!((c.params.get("split"), c.params.get("splits")), (64, 1));
        // Wide vectors stage smaller chunks.
        let bf16 = Plan::new(KernelCodec::Bf16 { head_dim: 256 }).unwrap();
        let c = plan_call(&bf16, &bf16, shape(1), 1000, 8, true).unwrap();
        assert!(c.partial_shared as usize <= 48 * 1024);
        assert_eq!(c.params.get("chunk"), 16);
    }

    #[test]
    fn int_pages_of_one_scale_go_to_the_tensor_cores_where_there_are_some() {
        let int = |bits, head_dim, group| {
            Plan::new(KernelCodec::Int {
                head_dim,
                bits,
                group,
            })
            .unwrap()
        };
        let (int4, int8) = (int(4, 128, 128), int(8, 128, 128));
        let c = plan_call(&int4, &int8, shape(1), 32768, 32, true).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_mma_48_d128_h4");
        assert_eq!(c.partial_block, 32 * MMA_WARPS);
        // Two staging buffers of 64-token chunks (528- and 1040-bit vectors), each warp's
        // 16 × 8 weights; the end-of-range merge (2 × (16 + 8 × 128) floats) fits below that.
        let words = |bits: usize| (64 * bits / 32 + 8).next_multiple_of(4);
        assert_eq!(
            c.partial_shared as usize,
            8 * (words(528) + words(1040)) + 2 * 512
        );
        assert_eq!(c.acc_floats, 8 * c.params.get("splits") as usize * 4 * 128);
        let c = plan_call(&int(8, 64, 64), &int(4, 64, 64), shape(2), 100, 8, true).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_mma_84_d64_h4");
        // GQA groups of five to eight heads take a product per limb.
        let c = plan_call(&int4, &int8, shape(1), 32768, 64, true).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_mma_48_d128_h8");
        let c = plan_call(&int4, &int4, shape(1), 32768, 40, true).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_mma_44_d128_h8");
        // Without tensor cores, with groups, other widths or another codec on either side:
        // the CUDA-core kernels.
        let c = plan_call(&int4, &int4, shape(1), 100, 32, false).unwrap();
        assert_eq!(c.partial_kernel, "kvc_attn_partial_ss_g4");
        for (k, v) in [
            (int(4, 128, 32), int4.clone()),
            (int4.clone(), int(8, 128, 64)),
            (int(3, 128, 128), int4.clone()),
            (int4.clone(), int(6, 128, 128)),
            (int(4, 256, 256), int(4, 256, 256)),
            (int(4, 96, 96), int(8, 96, 96)),
            (int4.clone(), voronoi(16, 4)),
        ] {
            let c = plan_call(&k, &v, shape(1), 100, 32, true).unwrap();
            assert!(
                c.partial_kernel.starts_with("kvc_attn_partial_"),
                "{k:?} {v:?}"
            );
        }
    }

    #[test]
    fn bad_calls_are_typed_errors() {
        let k = voronoi(16, 4);
        assert!(matches!(
            plan_call(&k, &k, shape(1), 100, 12, true),
            Err(Error::HeadsMismatch { .. })
        ));
        assert!(matches!(
            plan_call(&k, &k, shape(1), 100, 8 * 16, true),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            plan_call(&k, &k, shape(1), 64 * 2048 + 1, 8, true),
            Err(Error::TooManyTokens { .. })
        ));
        assert!(matches!(
            plan_call(&k, &k, shape(1), 0, 8, true),
            Err(Error::TooManyTokens { .. })
        ));
        let joint = voronoi(6, 3);
        assert!(matches!(
            plan_call(&joint, &k, shape(1), 10, 8, true),
            Err(Error::Unsupported { .. })
        ));
        let int4 = Plan::new(KernelCodec::Int {
            head_dim: 128,
            bits: 4,
            group: 128,
        })
        .unwrap();
        let c = plan_call(&int4, &k, shape(1), 10, 8, true).unwrap();
        assert_eq!((c.params.get("rot_k"), c.params.get("rot_v")), (0, 1));
        assert_eq!(c.partial_kernel, "kvc_attn_partial_sv_g1");
        assert!(matches!(
            plan_write(
                shape(1),
                PageLayout {
                    page_tokens: 64,
                    bits: 528
                },
                64 * 2048,
                1
            ),
            Err(Error::TooManyTokens { .. })
        ));
    }
}
