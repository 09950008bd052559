//! What the kernels compute, as plain data: a [`KernelCodec`] (the numbers a codec's kernels
//! need, supplied by kv-codec), the [`Plan`] built from it (parameter block, tables, exact
//! bits per vector) and the [`Launch`] geometry of one call. Nothing here touches a device,
//! so all of it is tested on machines without one.

use hadamard::Shape;
use lattice_core::{Codebook, D4Box, E8Box, MixedRadix};

use crate::error::Error;
use crate::params::Params;
use crate::source::{
    CODEC_BF16, CODEC_COMPAT, CODEC_FP8, CODEC_INT, CODEC_TURBOQUANT, CODEC_VORONOI,
};

/// Threads per block (eight warps).
pub const BLOCK_THREADS: u32 = 256;

/// Most vectors one thread block codes. A block's chunk is a multiple of 32 vectors (32
/// vectors of any bit length end on a 32-bit word, so blocks never share an output word),
/// as large as a 24 KiB shared-memory budget allows.
pub const MAX_CHUNK: usize = 128;

/// Shared memory a chunk's packed bits may take, in bytes.
const CHUNK_BUDGET: usize = 24 * 1024;

/// Shared memory words per warp for the fixed-order sums and the overload tasks (must match
/// kernels.cu's SCRATCH_WORDS_PER_WARP).
const SCRATCH_WORDS_PER_WARP: u32 = 32 * 8 + 32 * 4;

/// Largest head_dim the kernels take: a vector is held by at most one warp (8 values per lane).
pub const MAX_HEAD_DIM: usize = 256;

/// Largest q of the Voronoi kernels: a block's index (q^8) fits 64 bits.
pub const MAX_VORONOI_Q: u32 = 256;

/// Largest joint (mixed-radix) index the Voronoi kernels hold, in bits.
const MAX_JOINT_BITS: u32 = 80 * 32;

/// Largest joint index the compatibility kernels hold, in bits (64 limbs of 64 bits).
const MAX_COMPAT_JOINT_BITS: u32 = 64 * 64;

/// The lattice of a compatibility-mode box codebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoxLattice {
    /// D4 ∩ [−Q, Q]^4, blocks of 4 values.
    D4,
    /// E8 ∩ [−Q, Q]^8, blocks of 8 values.
    E8,
}

/// The element type of values in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision, held as its `u16` bits.
    F16,
    /// bfloat16, held as its `u16` bits.
    Bf16,
}

impl Dtype {
    /// The id the kernels' `P.dtype` holds.
    pub(crate) fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Bf16 => 2,
        }
    }
}

/// A codec, described by the numbers its kernels need. kv-codec builds these from its own
/// codecs (which are the specification); this crate knows nothing else about them.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum KernelCodec {
    /// The nested-lattice code E8/qE8 after the random-sign Hadamard rotation, one 11-bit
    /// scale per vector and one scale choice per 8-block (kv-codec's `voronoi-e8-q<q>-s<k>`).
    Voronoi {
        /// Values per vector.
        head_dim: usize,
        /// Seed of the rotation's signs.
        seed: u64,
        /// Nesting ratio q.
        q: u32,
        /// `fill · q`, the divisor of the rms in the vector scale, as the CPU computes it.
        fill_q: f32,
        /// The per-block scale multipliers αⱼ (1 to 4 of them).
        alphas: Vec<f32>,
    },
    /// TurboQuant-MSE: random-sign Hadamard of the unit vector, one Lloyd–Max level per
    /// coordinate, 16-bit norm.
    TurboQuant {
        /// Values per vector.
        head_dim: usize,
        /// Seed of the rotation's signs.
        seed: u64,
        /// Bits per coordinate.
        bits: u32,
        /// The 2^bits levels, ascending.
        levels: Vec<f32>,
        /// The 2^bits − 1 thresholds between them, ascending.
        thresholds: Vec<f32>,
    },
    /// OCP FP8 E4M3FN values with one 16-bit scale per group.
    Fp8E4m3 {
        /// Values per vector.
        head_dim: usize,
        /// Values per scale (`head_dim` for one scale per vector).
        group: usize,
    },
    /// Symmetric absmax integers of `bits` bits with one f16 scale per group.
    Int {
        /// Values per vector.
        head_dim: usize,
        /// Bits per value.
        bits: u32,
        /// Values per scale (`head_dim` for one scale per vector).
        group: usize,
    },
    /// bfloat16 passthrough, saturating below infinity.
    Bf16 {
        /// Values per vector.
        head_dim: usize,
    },
    /// The published KakeyaLattice pipeline (f16 norm, Sylvester–Hadamard, f16 absmax, box
    /// codebook at Q with lattice-core's indexing), per-block or joint index packing.
    Compat {
        /// Values per vector (a power of two).
        head_dim: usize,
        /// D4 or E8 blocks.
        lattice: BoxLattice,
        /// Box half-width Q.
        q: u32,
        /// One mixed-radix index per vector instead of whole bits per block.
        joint: bool,
    },
}

/// lattice-core's `ParityBox` counts for `[lo, hi]^k`: `counts[j][t]` vectors of length `j`
/// whose sum has parity `t`, as u64 word pairs; `None` if a count needs more than 64 bits.
fn parity_counts(lo: i64, hi: i64, k: usize) -> Option<Vec<u32>> {
    let evens_in = |a: i64, b: i64| {
        if a > b {
            0
        } else {
            b.div_euclid(2) - (a - 1).div_euclid(2)
        }
    };
    let evens = evens_in(lo, hi) as u128;
    let odds = (hi - lo + 1) as u128 - evens;
    let mut counts = vec![[1u128, 0u128]];
    for j in 1..=k {
        let prev = counts[j - 1];
        counts.push([
            evens * prev[0] + odds * prev[1],
            evens * prev[1] + odds * prev[0],
        ]);
    }
    let mut words = Vec::with_capacity(4 * (k + 1));
    for pair in counts {
        for c in pair {
            let c = u64::try_from(c).ok()?;
            words.extend([c as u32, (c >> 32) as u32]);
        }
    }
    Some(words)
}

/// Which direction a launch goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Values to packed bytes.
    Encode,
    /// Packed bytes to values.
    Decode,
}

/// One kernel launch: entry point, geometry and filled parameter block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The kernel's entry point.
    pub kernel: &'static str,
    /// Thread blocks (one per chunk of [`Plan::chunk`] vectors).
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
    /// Dynamic shared memory per block, in bytes (one chunk's packed bits, then each warp's
    /// scratch).
    pub shared_bytes: u32,
    /// The parameter block.
    pub params: Params,
}

/// A codec ready to launch: its parameter block (without the per-call fields), the tables
/// its kernels read, and its exact size per vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    codec: KernelCodec,
    params: Params,
    tables: Vec<u32>,
    kernels: [&'static str; 2],
}

fn unsupported(what: &'static str, value: u64, supported: &'static str) -> Error {
    Error::Unsupported {
        what,
        value,
        supported,
    }
}

/// Fills the shape fields for `head_dim` values held 8 per lane; `rotated` codecs also need
/// a length the transform supports. Returns the transform's shape.
fn shape(params: &mut Params, head_dim: usize, rotated: bool) -> Result<Shape, Error> {
    const DIMS: &str = "a multiple of 8 up to 256";
    if head_dim == 0 || !head_dim.is_multiple_of(8) || head_dim > MAX_HEAD_DIM {
        return Err(unsupported("head_dim", head_dim as u64, DIMS));
    }
    let shape = Shape::of(head_dim);
    let shape = match (shape, rotated) {
        (Ok(s), _) => s,
        // Unrotated codecs never read the shape; any multiple of 8 will do.
        (Err(_), false) => Shape {
            pow2: 8,
            odd: head_dim / 8,
        },
        (Err(_), true) => {
            return Err(unsupported(
                "head_dim",
                head_dim as u64,
                "a length the Hadamard transform supports (2^k, or 2^k·{3,5,7}), a multiple of 8 up to 256",
            ));
        }
    };
    let t = (head_dim / 8) as u32;
    params.set("d", head_dim as u32);
    params.set("p", shape.pow2 as u32);
    params.set("m", shape.odd as u32);
    params.set("t_per_vec", t);
    params.set("vpw", 32 / t);
    Ok(shape)
}

/// Appends the rotation's sign masks and mixing table to `tables`.
fn rotation(params: &mut Params, tables: &mut Vec<u32>, shape: Shape, seed: u64) {
    params.set("off_masks", tables.len() as u32);
    tables.extend(hadamard::sign_masks(seed, shape.len()));
    params.set("off_mix", tables.len() as u32);
    tables.extend(hadamard::mixing_table(shape).iter().map(|w| w.to_bits()));
}

/// Checks a group size (values per scale) of an unrotated codec.
fn group(params: &mut Params, head_dim: usize, group: usize) -> Result<usize, Error> {
    if group == 0 || !group.is_multiple_of(8) || !head_dim.is_multiple_of(group) {
        return Err(unsupported(
            "group",
            group as u64,
            "a multiple of 8 that divides head_dim",
        ));
    }
    params.set("group", group as u32);
    Ok(group)
}

impl Plan {
    /// The plan of `codec`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a shape or parameter the kernels do not implement (the
    /// CPU codec may still support it).
    pub fn new(codec: KernelCodec) -> Result<Self, Error> {
        let mut params = Params::zeroed();
        let mut tables = Vec::new();
        let bits: u64;
        let kernels;
        match &codec {
            KernelCodec::Voronoi {
                head_dim,
                seed,
                q,
                fill_q,
                alphas,
            } => {
                let (d, q) = (*head_dim, *q);
                let s = shape(&mut params, d, true)?;
                rotation(&mut params, &mut tables, s, *seed);
                if !(2..=MAX_VORONOI_Q).contains(&q) {
                    return Err(unsupported("q", u64::from(q), "2..=256"));
                }
                let scales = alphas.len() as u32;
                if !(1..=4).contains(&scales) {
                    return Err(unsupported("scales", u64::from(scales), "1 to 4"));
                }
                params.set("codec", CODEC_VORONOI);
                params.set("q", q);
                params.set("q_pow2", u32::from(q.is_power_of_two()));
                params.set("scales", scales);
                params.set_f32("inv_q", 1.0 / q as f32);
                params.set_f32("qf", q as f32);
                params.set_f32("fill_q", *fill_q);
                for (j, name) in ["alpha0", "alpha1", "alpha2", "alpha3"].iter().enumerate() {
                    params.set_f32(name, alphas.get(j).copied().unwrap_or(1.0));
                }
                let blocks = (d / 8) as u64;
                let fields = if q.is_power_of_two() && scales.is_power_of_two() {
                    let (cb, lq) = (scales.trailing_zeros(), q.trailing_zeros());
                    params.set("choice_bits", cb);
                    params.set("index_bits", 8 * lq);
                    params.set("log2q", lq);
                    blocks * u64::from(cb + 8 * lq)
                } else {
                    // The same radices as the CPU codec: (scales, q^8) per block.
                    let block = u64::from(q).checked_pow(8).ok_or(unsupported(
                        "q",
                        u64::from(q),
                        "q^8 below 2^64 for joint packing",
                    ))?;
                    let radices: Vec<u64> = (0..blocks)
                        .flat_map(|_| [u64::from(scales), block])
                        .collect();
                    let joint = MixedRadix::new(&radices)
                        .map_err(|_| unsupported("scales", u64::from(scales), "at least 1"))?;
                    if joint.bits() > MAX_JOINT_BITS {
                        return Err(unsupported(
                            "joint index bits",
                            u64::from(joint.bits()),
                            "at most 2560",
                        ));
                    }
                    params.set("joint", 1);
                    params.set("joint_bits", joint.bits());
                    params.set("joint_words", joint.bits().div_ceil(32));
                    u64::from(joint.bits())
                };
                bits = 11 + fields;
                kernels = ["kvc_voronoi_encode", "kvc_voronoi_decode"];
            }
            KernelCodec::TurboQuant {
                head_dim,
                seed,
                bits: b,
                levels,
                thresholds,
            } => {
                let (d, b) = (*head_dim, *b);
                let s = shape(&mut params, d, true)?;
                rotation(&mut params, &mut tables, s, *seed);
                if !(1..=8).contains(&b)
                    || levels.len() != 1 << b
                    || thresholds.len() + 1 != levels.len()
                {
                    return Err(unsupported(
                        "bits",
                        u64::from(b),
                        "1..=8 with 2^bits levels and 2^bits − 1 thresholds",
                    ));
                }
                params.set("codec", CODEC_TURBOQUANT);
                params.set("vbits", b);
                params.set("off_levels", tables.len() as u32);
                tables.extend(levels.iter().map(|v| v.to_bits()));
                params.set("off_thresholds", tables.len() as u32);
                tables.extend(thresholds.iter().map(|v| v.to_bits()));
                params.set("nthresholds", thresholds.len() as u32);
                bits = 16 + u64::from(b) * d as u64;
                kernels = ["kvc_turboquant_encode", "kvc_turboquant_decode"];
            }
            KernelCodec::Fp8E4m3 { head_dim, group: g } => {
                shape(&mut params, *head_dim, false)?;
                let g = group(&mut params, *head_dim, *g)?;
                params.set("codec", CODEC_FP8);
                params.set("vbits", 8);
                bits = (*head_dim / g) as u64 * 16 + 8 * *head_dim as u64;
                kernels = ["kvc_scalar_encode", "kvc_scalar_decode"];
            }
            KernelCodec::Int {
                head_dim,
                bits: b,
                group: g,
            } => {
                shape(&mut params, *head_dim, false)?;
                let g = group(&mut params, *head_dim, *g)?;
                if !(2..=8).contains(b) {
                    return Err(unsupported("bits", u64::from(*b), "2..=8"));
                }
                params.set("codec", CODEC_INT);
                params.set("vbits", *b);
                bits = (*head_dim / g) as u64 * 16 + u64::from(*b) * *head_dim as u64;
                kernels = ["kvc_scalar_encode", "kvc_scalar_decode"];
            }
            KernelCodec::Compat {
                head_dim,
                lattice,
                q,
                joint,
            } => {
                let d = *head_dim;
                if !d.is_power_of_two() {
                    return Err(unsupported("head_dim", d as u64, "a power of two"));
                }
                let s = shape(&mut params, d, true)?;
                params.set("off_mix", tables.len() as u32);
                tables.extend(hadamard::mixing_table(s).iter().map(|w| w.to_bits()));
                const TOO_BIG: &str = "a box of fewer than 2^64 points (D4: Q ≤ 4095, E8: Q ≤ 124)";
                let big = || unsupported("q", u64::from(*q), TOO_BIG);
                let lo = -i64::from(*q);
                let (block, size, integers) = match lattice {
                    BoxLattice::D4 => {
                        let book = D4Box::new(*q).map_err(|_| big())?;
                        (4usize, book.size(), book.size())
                    }
                    BoxLattice::E8 => {
                        let book = E8Box::new(*q).map_err(|_| big())?;
                        let integers = lattice_core::D8Box::new(*q).map_err(|_| big())?.size();
                        (8, book.size(), integers)
                    }
                };
                let size = u64::try_from(size).map_err(|_| big())?;
                let counts = parity_counts(lo, i64::from(*q), block).ok_or_else(big)?;
                params.set("off_counts", tables.len() as u32);
                tables.extend(&counts);
                if block == 8 {
                    let half = parity_counts(lo, i64::from(*q) - 1, 8).ok_or_else(big)?;
                    params.set("off_counts_half", tables.len() as u32);
                    tables.extend(&half);
                }
                // The integer coset's count from the recurrence must be lattice-core's.
                let last = counts.len() - 4;
                let even_total = u128::from(counts[last]) | (u128::from(counts[last + 1]) << 32);
                assert_eq!(
                    even_total, integers,
                    "box counts disagree with lattice-core"
                );
                params.set("codec", CODEC_COMPAT);
                params.set("cblock", block as u32);
                params.set("box_q", *q);
                params.set_f32("box_qf", *q as f32);
                params.set("size_lo", size as u32);
                params.set("size_hi", (size >> 32) as u32);
                params.set("int_size_lo", integers as u32);
                params.set("int_size_hi", (integers >> 32) as u32);
                let block_bits = 64 - (size - 1).leading_zeros();
                params.set("block_bits", block_bits);
                let blocks = d / block;
                let index_bits = if *joint {
                    let m = MixedRadix::uniform(size, blocks).map_err(|_| big())?;
                    if m.bits() > MAX_COMPAT_JOINT_BITS {
                        return Err(unsupported(
                            "joint index bits",
                            u64::from(m.bits()),
                            "at most 4096",
                        ));
                    }
                    params.set("joint", 1);
                    params.set("joint_bits", m.bits());
                    params.set("joint_limbs", m.limbs() as u32);
                    u64::from(m.bits())
                } else {
                    blocks as u64 * u64::from(block_bits)
                };
                bits = 32 + index_bits;
                kernels = ["kvc_compat_encode", "kvc_compat_decode"];
            }
            KernelCodec::Bf16 { head_dim } => {
                shape(&mut params, *head_dim, false)?;
                params.set("codec", CODEC_BF16);
                params.set("group", *head_dim as u32);
                params.set("vbits", 16);
                bits = 16 * *head_dim as u64;
                kernels = ["kvc_scalar_encode", "kvc_scalar_decode"];
            }
        }
        params.set("bits", bits as u32);
        let mut chunk = MAX_CHUNK;
        while chunk > 32 && chunk / 32 * bits as usize * 4 > CHUNK_BUDGET {
            chunk /= 2;
        }
        params.set("chunk", chunk as u32);
        // The table buffer is never empty, so that every plan has a device allocation.
        if tables.is_empty() {
            tables.push(0);
        }
        Ok(Self {
            codec,
            params,
            tables,
            kernels,
        })
    }

    /// The parameter block without the per-call fields.
    pub(crate) fn params(&self) -> &Params {
        &self.params
    }

    /// The codec this plan runs.
    pub fn codec(&self) -> &KernelCodec {
        &self.codec
    }

    /// Values per vector.
    pub fn head_dim(&self) -> usize {
        self.params.get("d") as usize
    }

    /// Bits per vector, exactly (must equal the CPU codec's).
    pub fn bits_per_vector(&self) -> u32 {
        self.params.get("bits")
    }

    /// Vectors coded by one thread block.
    pub fn chunk(&self) -> usize {
        self.params.get("chunk") as usize
    }

    /// Bytes a batch of `vectors` vectors occupies: ⌈vectors · bits / 8⌉, as on the CPU.
    pub fn encoded_len(&self, vectors: usize) -> usize {
        (vectors * self.bits_per_vector() as usize).div_ceil(8)
    }

    /// The words of the table buffer the kernels read (sign masks, mixing table, levels).
    pub fn tables(&self) -> &[u32] {
        &self.tables
    }

    /// The launch of `op` over `vectors` vectors of `dtype`, or `None` for an empty batch.
    ///
    /// # Errors
    /// [`Error::BatchTooLarge`] beyond `u32::MAX` vectors.
    pub fn launch(&self, op: Op, vectors: usize, dtype: Dtype) -> Result<Option<Launch>, Error> {
        let limit = u32::MAX as usize;
        if vectors > limit {
            return Err(Error::BatchTooLarge { vectors, limit });
        }
        if vectors == 0 {
            return Ok(None);
        }
        let mut params = self.params;
        params.set("n", vectors as u32);
        params.set("dtype", dtype.id());
        let kernel = match op {
            Op::Encode => self.kernels[0],
            Op::Decode => self.kernels[1],
        };
        let chunk_words = self.chunk() as u32 / 32 * self.bits_per_vector();
        Ok(Some(Launch {
            kernel,
            grid: vectors.div_ceil(self.chunk()) as u32,
            block: BLOCK_THREADS,
            shared_bytes: 4 * (chunk_words + BLOCK_THREADS / 32 * SCRATCH_WORDS_PER_WARP),
            params,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voronoi(head_dim: usize, q: u32, scales: usize) -> Result<Plan, Error> {
        Plan::new(KernelCodec::Voronoi {
            head_dim,
            seed: 7,
            q,
            fill_q: 5.0,
            alphas: vec![1.0; scales],
        })
    }

    #[test]
    fn voronoi_sizes_follow_the_layout() {
        // 11 + 16 blocks · (2 choice + 32 index bits).
        assert_eq!(voronoi(128, 16, 4).unwrap().bits_per_vector(), 11 + 16 * 34);
        // Joint: ⌈log2 (3 · 16^8)^16⌉ = ⌈16 · 33.585⌉ = 538.
        assert_eq!(voronoi(128, 16, 3).unwrap().bits_per_vector(), 11 + 538);
        assert!(matches!(
            voronoi(512, 16, 4),
            Err(Error::Unsupported {
                what: "head_dim",
                ..
            })
        ));
        assert!(matches!(
            voronoi(100, 16, 4),
            Err(Error::Unsupported { .. })
        ));
        assert!(matches!(
            voronoi(128, 512, 4),
            Err(Error::Unsupported { what: "q", .. })
        ));
        let p = voronoi(96, 8, 2).unwrap();
        assert_eq!(p.tables().len(), 96 + 9);
    }

    #[test]
    fn launches_cover_the_batch_in_chunks() {
        let p = voronoi(64, 16, 4).unwrap();
        assert_eq!(p.launch(Op::Encode, 0, Dtype::F32).unwrap(), None);
        let l = p.launch(Op::Decode, 300, Dtype::Bf16).unwrap().unwrap();
        assert_eq!(p.chunk(), 128);
        assert_eq!(
            (l.kernel, l.grid, l.block),
            ("kvc_voronoi_decode", 3, BLOCK_THREADS)
        );
        assert_eq!(
            l.shared_bytes,
            4 * (4 * p.bits_per_vector() + 8 * SCRATCH_WORDS_PER_WARP)
        );
        assert_eq!(l.params.get("n"), 300);
        // Wide vectors get smaller chunks, within the shared-memory budget.
        let bf16 = Plan::new(KernelCodec::Bf16 { head_dim: 256 }).unwrap();
        assert_eq!(bf16.chunk(), 32);
        assert_eq!(l.params.get("vpw"), 4);
    }

    #[test]
    fn compat_sizes_are_the_published_ones() {
        let compat = |lattice, q, joint| {
            Plan::new(KernelCodec::Compat {
                head_dim: 128,
                lattice,
                q,
                joint,
            })
        };
        // The published accounting at d = 128: D4 Q=38 832 bits, E8 Q=38 848 bits.
        assert_eq!(
            compat(BoxLattice::D4, 38, false).unwrap().bits_per_vector(),
            832
        );
        assert_eq!(
            compat(BoxLattice::E8, 38, false).unwrap().bits_per_vector(),
            848
        );
        // Joint packing saves the rounding of every block.
        assert!(compat(BoxLattice::D4, 38, true).unwrap().bits_per_vector() < 832);
        // E8 boxes of 2^64 points or more have no kernels.
        assert!(matches!(
            compat(BoxLattice::E8, 200, false),
            Err(Error::Unsupported { what: "q", .. })
        ));
        assert!(matches!(
            Plan::new(KernelCodec::Compat {
                head_dim: 96,
                lattice: BoxLattice::D4,
                q: 10,
                joint: false
            }),
            Err(Error::Unsupported {
                what: "head_dim",
                ..
            })
        ));
    }

    #[test]
    fn baselines_have_their_cpu_sizes() {
        let fp8 = Plan::new(KernelCodec::Fp8E4m3 {
            head_dim: 128,
            group: 64,
        })
        .unwrap();
        assert_eq!(fp8.bits_per_vector(), 2 * 16 + 8 * 128);
        let int4 = Plan::new(KernelCodec::Int {
            head_dim: 64,
            bits: 4,
            group: 64,
        })
        .unwrap();
        assert_eq!(int4.bits_per_vector(), 16 + 4 * 64);
        assert!(
            Plan::new(KernelCodec::Int {
                head_dim: 64,
                bits: 4,
                group: 4
            })
            .is_err()
        );
        let bf16 = Plan::new(KernelCodec::Bf16 { head_dim: 24 }).unwrap();
        assert_eq!(bf16.encoded_len(3), 3 * 48);
    }
}
