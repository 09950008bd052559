//! The default codec family: the nested-lattice (Voronoi) code E8/qE8 with per-block scale
//! choices, after a random-sign Hadamard rotation.
//!
//! Per vector `x` of `d` values (`d` a multiple of 8):
//! 1. `y = T·diag(signs)·x` (the orthonormal transform of `hadamard`, seeded signs), so the
//!    coordinates are close to iid Gaussian whatever the channel structure of `x`.
//! 2. One scale `σ = rms(y) / (fill · q)`, rounded to the 11-bit [`crate::scale`] format
//!    (8 exponent and 3 mantissa bits; the encoder quantises with the rounded value, so the
//!    rounding only shifts the fit, by < 0.01 dB), where `fill` is a design constant: the
//!    lattice-unit standard deviation, as a fraction of q, that balances granular error
//!    against overload.
//! 3. Each 8-block picks one of `k` scale multipliers `αⱼ = 2^(j·step)`: the one whose
//!    codebook point has the least squared error. A block whose nearest E8 point falls
//!    outside the Voronoi cell of qE8 (an *overload*, which would wrap around to the far side
//!    of the cell) is pulled towards the origin until its nearest point is a codebook point,
//!    so overload costs a clipping error. The index is that point's coset mod qE8.
//! 4. Decode: `ŷ_b = σ·αⱼ·(λ − q·Q(λ/q))`, then `x̂ = diag(signs)·T·ŷ`.
//!
//! Bits per vector: 11 (scale) + the block fields. When k and q are powers of two, each
//! block takes log2 k bits of choice and 8·log2 q bits of index; otherwise all choices and
//! indices of the vector form one mixed-radix number of ⌈log2 (k·q^8)^(d/8)⌉ bits.

use std::f32::consts::FRAC_1_SQRT_2;
use std::sync::Arc;

use hadamard::Fwht;
use lattice_core::{E8, Lattice, MixedRadix, VoronoiCodebook};
use wide::{f32x8, i32x8};

use crate::bits::{BitReader, BitWriter};
use crate::codec::{VectorCodec, safe_prescale, sum_of_squares};
use crate::codecs::{decode_in_rotation, decode_unrotating};
use crate::error::Error;
use crate::scale;
use crate::spec::CodecSpec;

/// Mantissa bits of the per-vector scale.
const SCALE_MANTISSA: u32 = 3;

/// Most blocks a vector can have (head_dim 4096).
const MAX_BLOCKS: usize = hadamard::MAX_LEN / 8;

/// Largest q packed with mixed radix (q^8 must fit a u64 digit).
const MAX_MIXED_Q: u32 = 256;

/// Limbs of the largest joint index: MAX_BLOCKS blocks of at most log2(4·256^8) = 66 bits.
const MAX_LIMBS: usize = (MAX_BLOCKS * 66).div_ceil(64);

/// Exponent step between successive per-block scale multipliers (αⱼ = 2^(j·step)).
///
/// This and [`fill`] were chosen by grid searches on iid Gaussian vectors at d = 128
/// (2048–4096 vectors; q = 4…32; fill 0.18…0.42; step 0.25…1.0), keeping the setting with
/// the least gap to the Shannon bound. Real K/V after the rotation behave like the Gaussian
/// (see the README's rate–distortion table), so nothing here is tuned on the shared data.
fn step(scales: u32) -> f32 {
    match scales {
        2 => 0.5,
        3 => 0.4,
        _ => 0.3,
    }
}

/// Standard deviation, in lattice units of E8, that the vector scale gives the rotated
/// coordinates, as a fraction of q: larger is finer (less granular error) but overloads
/// more blocks. More scale choices per block absorb more overload, so they allow more.
fn fill(q: u32, scales: u32) -> f32 {
    // (fill at q = 8, decrease per doubling of q): the best fill falls slowly with the rate,
    // because overload clipping weighs more when the granular error is small.
    let (base, slope) = match scales {
        1 => (0.22, 0.02),
        2 => (0.28, 0.02),
        3 => (0.32, 0.015),
        _ => (0.34, 0.015),
    };
    let octaves_above_8 = (q as f32).log2() - 3.0;
    // With one scale the best fill keeps falling below q = 8 too; with more it levels off.
    let from = if scales == 1 {
        octaves_above_8
    } else {
        octaves_above_8.max(0.0)
    };
    // Above q ≈ 128 the best fill with four choices stops falling (0.28 on Gaussian data;
    // real K/V still gain up to 0.285), while a little more fill overloads sharply.
    let floor = if scales >= 4 { 0.28 } else { 0.0 };
    (base - slope * from).max(floor)
}

/// Blocks the encoder chooses for together (whole vectors, at least one): enough that the
/// overloaded choices of a round fill the eight lanes of the clipping bisections, few enough
/// that a round's blocks stay in the L1 cache.
const ROUND_BLOCKS: usize = 256;

/// Bisection steps when pulling an overloaded block back into the cell.
const CLIP_BISECTIONS: u32 = 8;

/// How a vector's block fields are laid out.
#[derive(Clone, Debug)]
enum Packing {
    /// k and q powers of two: per block, log2 k choice bits then 8·log2 q index bits.
    Raw { choice_bits: u32, index_bits: u32 },
    /// One mixed-radix number with digits (choice₀, index₀, choice₁, index₁, …).
    Joint(MixedRadix),
}

/// The E8 Voronoi codec (see the module docs).
#[derive(Clone, Debug)]
pub struct VoronoiCodec {
    spec: CodecSpec,
    d: usize,
    book: VoronoiCodebook<E8, 8>,
    q: u32,
    fill: f32,
    /// αⱼ for j < scales.
    alphas: Vec<f32>,
    packing: Packing,
    fwht: Arc<Fwht>,
}

impl VoronoiCodec {
    /// The codec for `spec` (a [`CodecSpec::Voronoi`]) at `head_dim`, rotating with the
    /// signs of `seed`.
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` is a multiple of 8 the transform
    /// supports; parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize, seed: u64) -> Result<Self, Error> {
        let CodecSpec::Voronoi { q, scales } = spec else {
            panic!("VoronoiCodec::new needs a Voronoi spec, got {spec}");
        };
        spec.validate()?;
        if !head_dim.is_multiple_of(8) || !hadamard::is_supported(head_dim) {
            return Err(Error::UnsupportedHeadDim { head_dim });
        }
        let book = VoronoiCodebook::<E8, 8>::new(q)?;
        let packing = if q.is_power_of_two() && scales.is_power_of_two() {
            Packing::Raw {
                choice_bits: scales.trailing_zeros(),
                index_bits: 8 * q.trailing_zeros(),
            }
        } else {
            if q > MAX_MIXED_Q {
                return Err(Error::InvalidParameter {
                    name: "q",
                    value: u64::from(q),
                    allowed: "a power of two, or at most 256 (mixed-radix packing)",
                });
            }
            let block = u64::from(q).checked_pow(8).ok_or(Error::InvalidParameter {
                name: "q",
                value: u64::from(q),
                allowed: "q^8 below 2^64 for mixed-radix packing (q < 256)",
            })?;
            let radices: Vec<u64> = (0..head_dim / 8)
                .flat_map(|_| [u64::from(scales), block])
                .collect();
            Packing::Joint(MixedRadix::new(&radices)?)
        };
        let fwht = Arc::new(
            Fwht::with_signs(head_dim, seed).map_err(|_| Error::UnsupportedHeadDim { head_dim })?,
        );
        let alphas = (0..scales)
            .map(|j| (j as f32 * step(scales)).exp2())
            .collect();
        Ok(Self {
            spec,
            d: head_dim,
            book,
            q,
            fill: fill(q, scales),
            alphas,
            packing,
            fwht,
        })
    }

    fn blocks(&self) -> usize {
        self.d / 8
    }

    /// Rotates `x` into `y` and picks the vector scale: its code and the σ the blocks are
    /// divided by.
    fn rotate_and_scale(&self, x: &[f32], y: &mut [f32]) -> (u32, f32) {
        // Work on x·k (k an exact power of two) so that huge or tiny inputs neither overflow
        // the butterflies nor lose the scale; σ is stored for x itself.
        let k = safe_prescale(x);
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = xi * k;
        }
        self.fwht.forward_inplace(y);
        let rms = (sum_of_squares(y) / self.d as f32).sqrt();
        let code = scale::encode(rms / (self.fill * self.q as f32) / k, SCALE_MANTISSA);
        let sigma = scale::decode(code, SCALE_MANTISSA).expect("encode writes finite codes") * k;
        (code, sigma)
    }

    /// Chooses, for each block of `z` (blocks of `y / σ`), the scale multiplier and the coset
    /// (as basis coordinates mod q), appended to `chosen`: the choice with the least squared
    /// error (the first on ties), where an overloaded block (its nearest E8 point outside the
    /// cell of qE8) is first pulled towards the origin until its nearest point is a codebook
    /// point, so that overload costs a clipping error, not a wrap-around. Eight blocks go
    /// through each step side by side.
    ///
    /// Clipping costs up to [`CLIP_BISECTIONS`] more decodes, so an overloaded choice is
    /// clipped only if a lower bound on its error does not already lose to the best choice
    /// that needed no clipping: the clipped point is an E8 point inside the cell of qE8, so
    /// its error is at least the unclipped nearest point's and at least the distance to the
    /// cell (from its gauge). Only choices that cannot win are skipped, so the result is the
    /// same as clipping every choice. The choices still to clip are collected over all of
    /// `z` (the blocks of many vectors) before any is clipped, so that the bisections fill
    /// all eight lanes: each block's result depends on that block alone.
    fn choose(&self, z: &[[f32; 8]], chosen: &mut Vec<(u32, [u32; 8])>) {
        // Per block (choice, point, error). Offers are kept by least error and then least
        // choice, so the result does not depend on the order of the offers.
        let mut best = vec![(u32::MAX, [0f32; 8], f32::INFINITY); z.len()];
        let offer = |best: &mut (u32, [f32; 8], f32), j: u32, point: &[f32; 8], err: f32| {
            if err < best.2 || (err == best.2 && j < best.0) {
                *best = (j, *point, err);
            }
        };
        // Overloaded (block, choice, error bound).
        let mut overloaded = Vec::new();
        for (first, group) in (0..).step_by(8).zip(z.chunks(8)) {
            let count = group.len();
            let mut zg = [[0f32; 8]; 8];
            zg[..count].copy_from_slice(group);
            // The group's blocks one per lane, once for all the scale choices; each choice's
            // points, codeword tests and errors stay in lanes, and the offers of the choices
            // that need no clipping are kept in lanes too (`offer`'s rule, with "no choice
            // yet" as an infinite choice), so the points are laid out per block once.
            let zt = lanes(&zg);
            let (mut best_err, mut best_j) =
                (f32x8::splat(f32::INFINITY), f32x8::splat(f32::INFINITY));
            let mut best_points = [f32x8::ZERO; 8];
            for (j, &alpha) in self.alphas.iter().enumerate() {
                let a = f32x8::splat(alpha);
                let vt: [f32x8; 8] = std::array::from_fn(|i| zt[i] / a);
                let points = E8::closest_points_in_lanes(&vt);
                let codewords = self.book.are_codewords_in_lanes(&points);
                let errors = block_errors(&zt, a, &points);
                let jv = f32x8::splat(j as f32);
                let wins = codewords
                    & (errors.simd_lt(best_err) | (errors.simd_eq(best_err) & jv.simd_lt(best_j)));
                best_err = wins.select(errors, best_err);
                best_j = wins.select(jv, best_j);
                for (b, p) in best_points.iter_mut().zip(&points) {
                    *b = wins.select(*p, *b);
                }
                // Lane b's answer in bit b.
                let codewords = codewords.to_bitmask();
                if (0..count).all(|b| codewords >> b & 1 != 0) {
                    continue;
                }
                let (gauges, errors) =
                    (E8::cell_gauges_in_lanes(&vt).to_array(), errors.to_array());
                for b in (0..count).filter(|&b| codewords >> b & 1 == 0) {
                    // Each facet of the cell of qE8 is {⟨x, r⟩ = q} for a root r of norm √2.
                    let beyond = (gauges[b] - self.q as f32).max(0.0) * FRAC_1_SQRT_2;
                    let bound = errors[b].max(alpha * alpha * beyond * beyond);
                    overloaded.push((first + b, j as u32, bound));
                }
            }
            let points = f32x8::transpose(best_points);
            let (errs, js) = (best_err.to_array(), best_j.to_array());
            for b in 0..count {
                let j = if js[b].is_finite() {
                    js[b] as u32
                } else {
                    u32::MAX
                };
                best[first + b] = (j, points[b].to_array(), errs[b]);
            }
        }
        // The margin covers f32 rounding in the bound and in the errors compared.
        overloaded.retain(|&(b, _, bound)| {
            bound * (1.0 - 1e-4) - 1e-6 * sum_of_squares(&z[b]) <= best[b].2
        });
        for group in overloaded.chunks(8) {
            // Padding lanes: the origin, with α = 1.
            let (mut alphas, mut zg) = ([1f32; 8], [[0f32; 8]; 8]);
            for (lane, &(b, j, _)) in group.iter().enumerate() {
                alphas[lane] = self.alphas[j as usize];
                zg[lane] = z[b];
            }
            let (zt, a) = (lanes(&zg), f32x8::from(alphas));
            let points = self.clip_into_cell(&std::array::from_fn(|i| zt[i] / a));
            let errors = block_errors(&zt, a, &points).to_array();
            let points = f32x8::transpose(points);
            for (lane, &(b, j, _)) in group.iter().enumerate() {
                offer(&mut best[b], j, points[lane].as_array(), errors[lane]);
            }
        }
        // The chosen points' coset coordinates, eight blocks at a time (padding: the origin).
        for group in best.chunks(8) {
            let mut points = [[0f32; 8]; 8];
            for (p, &(_, point, _)) in points.iter_mut().zip(group) {
                *p = point;
            }
            let coords = f32x8::transpose(self.book.coset_coordinates_in_lanes(&lanes(&points)));
            chosen.extend(
                group
                    .iter()
                    .zip(coords)
                    .map(|(&(j, _, _), c)| (j, c.to_array().map(|ci| ci as u32))),
            );
        }
    }

    /// The codebook points for eight overloaded blocks `v` (in lanes, as [`lanes`] lays them
    /// out; their nearest E8 points are not codewords), in lanes too: per block, the nearest
    /// E8 point of `t·v` for the largest `t` on a grid of 1/2^[`CLIP_BISECTIONS`] found by
    /// bisection whose nearest point is a codeword (the
    /// origin always is), which keeps the clipping error small even at high rates. Each
    /// block bisects on its own; the eight run side by side.
    ///
    /// A step whose eight answers all follow from the gauges of the scaled blocks skips the
    /// decode: the gauge is a norm whose unit ball is E8's Voronoi cell, and a point minus
    /// its nearest lattice point lies in that cell, so the nearest point's gauge is within 1
    /// of the input's: below q − 1 it is a codeword, above q + 1 it is not (the margins
    /// cover the rounding of the input's gauge). The points of the final `t` are decoded
    /// once at the end from the same products, so the result is the plain bisection's (the
    /// GPU encoder settles its steps the same way).
    fn clip_into_cell(&self, v: &[f32x8; 8]) -> [f32x8; 8] {
        let q = self.q as f32;
        let scaled = |t: f32x8| -> [f32x8; 8] { std::array::from_fn(|i| v[i] * t) };
        let (mut lo, mut hi) = (f32x8::ZERO, f32x8::ONE);
        for _ in 0..CLIP_BISECTIONS {
            let mid = f32x8::splat(0.5) * (lo + hi);
            let inputs = scaled(mid);
            let g = E8::cell_gauges_in_lanes(&inputs);
            let surely_in = (g * f32x8::splat(1.0001)).simd_lt(f32x8::splat(q - 1.0));
            let surely_out = (g * f32x8::splat(0.9999)).simd_gt(f32x8::splat(q + 1.0));
            let inside = if (surely_in | surely_out).all() {
                surely_in
            } else {
                self.book
                    .are_codewords_in_lanes(&E8::closest_points_in_lanes(&inputs))
            };
            lo = inside.select(mid, lo);
            hi = inside.select(hi, mid);
        }
        let points = E8::closest_points_in_lanes(&scaled(lo));
        // t = 0 is the origin, with +0 coordinates whatever the signs of v.
        let moved = f32x8::ZERO.simd_lt(lo);
        points.map(|p| moved.select(p, f32x8::ZERO))
    }

    /// The coset coordinates as one mixed-radix digit Σ cᵢ·q^i (joint packing: q^8 < 2^64).
    fn joint_digit(&self, c: &[u32; 8]) -> u64 {
        c.iter()
            .rev()
            .fold(0u64, |digit, &ci| digit * u64::from(self.q) + u64::from(ci))
    }

    /// Inverse of [`VoronoiCodec::joint_digit`] for a digit below q^8 (so q < 256).
    ///
    /// One 64-bit division splits the digit into two halves below q^4 < 2^32; each half is
    /// then divided by q with a multiplication by ⌈2^64/q⌉, exact for 32-bit dividends
    /// (Lemire, Kaser & Kurz, "Faster remainder by direct computation", 2019), because the
    /// hardware divisions were most of the decoder's time.
    fn coordinates_of_digit(&self, digit: u64) -> [u32; 8] {
        let q = u64::from(self.q);
        let q4 = q * q * q * q;
        let magic = u64::MAX / q + 1;
        let mut c = [0u32; 8];
        for (half, mut x) in [digit % q4, digit / q4].into_iter().enumerate() {
            for ci in &mut c[4 * half..4 * half + 4] {
                let quotient = ((u128::from(magic) * u128::from(x)) >> 64) as u64;
                *ci = (x - quotient * q) as u32;
                x = quotient;
            }
        }
        c
    }
}

impl VectorCodec for VoronoiCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        let fields = match &self.packing {
            Packing::Raw {
                choice_bits,
                index_bits,
            } => self.blocks() as u32 * (choice_bits + index_bits),
            Packing::Joint(m) => m.bits(),
        };
        scale::bits(SCALE_MANTISSA) + fields
    }

    fn scratch_len(&self) -> usize {
        self.d
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        self.encode_vectors(x, out);
    }

    /// Rotates and scales the vectors of a round (`ROUND_BLOCKS` blocks), chooses for all
    /// their blocks together, then writes each vector's fields.
    fn encode_vectors(&self, x: &[f32], out: &mut [u8]) {
        let blocks = self.blocks();
        let per_round = (ROUND_BLOCKS / blocks).max(1);
        let mut y = vec![0f32; self.d];
        let mut z = Vec::with_capacity(per_round * blocks);
        let mut codes = Vec::with_capacity(per_round);
        let mut chosen = Vec::with_capacity(per_round * blocks);
        let mut w = BitWriter::new(out);
        for round in x.chunks(per_round * self.d) {
            z.clear();
            codes.clear();
            chosen.clear();
            for x in round.chunks_exact(self.d) {
                let (code, sigma) = self.rotate_and_scale(x, &mut y);
                codes.push(code);
                z.extend(y.chunks_exact(8).map(|block| {
                    if sigma > 0.0 {
                        std::array::from_fn(|i| block[i] / sigma)
                    } else {
                        [0.0; 8]
                    }
                }));
            }
            self.choose(&z, &mut chosen);
            for (&code, fields) in codes.iter().zip(chosen.chunks_exact(blocks)) {
                self.write_vector(&mut w, code, fields);
            }
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        decode_unrotating(&self.fwht, out, scratch, |y| {
            self.decode_unrotated(&mut BitReader::new(bytes), y)
        })
    }

    /// One reader runs through the chunk: every vector is exactly `bits_per_vector` bits, so
    /// each starts where the one before ended, and no vector's bits are copied out first.
    fn decode_vectors(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), (usize, &'static str)> {
        let mut r = BitReader::new(bytes);
        let mut scratch = vec![0f32; self.d];
        for (i, y) in out.chunks_exact_mut(self.d).enumerate() {
            decode_unrotating(&self.fwht, y, &mut scratch, |y| {
                self.decode_unrotated(&mut r, y)
            })
            .map_err(|reason| (i, reason))?;
        }
        Ok(())
    }

    fn rotation(&self) -> Option<&Fwht> {
        Some(&self.fwht)
    }

    fn decode_rotated(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        decode_in_rotation(bytes, out, |b, y| {
            self.decode_unrotated(&mut BitReader::new(b), y)
        })
    }
}

impl VoronoiCodec {
    /// Writes one vector: its scale code, then its blocks' (choice, coset coordinates).
    fn write_vector(&self, w: &mut BitWriter<'_>, code: u32, chosen: &[(u32, [u32; 8])]) {
        w.write(u64::from(code), scale::bits(SCALE_MANTISSA));
        match &self.packing {
            // Coordinate i fills bits i·log2 q … of the block index.
            &Packing::Raw {
                choice_bits,
                index_bits,
            } => {
                for &(choice, coords) in chosen {
                    w.write(u64::from(choice), choice_bits);
                    // Four coordinates per write: 4·log2 q ≤ 60 bits.
                    let bits = index_bits / 8;
                    for quad in coords.chunks_exact(4) {
                        let packed = quad
                            .iter()
                            .rev()
                            .fold(0u64, |acc, &ci| (acc << bits) | u64::from(ci));
                        w.write(packed, 4 * bits);
                    }
                }
            }
            Packing::Joint(m) => with_joint_buffers(self.blocks(), |fields, limbs, _| {
                for (pair, &(choice, coords)) in fields.chunks_exact_mut(2).zip(chosen) {
                    pair[0] = u64::from(choice);
                    pair[1] = self.joint_digit(&coords);
                }
                let limbs = &mut limbs[..m.limbs()];
                m.encode(fields, limbs);
                w.write_limbs(limbs, m.bits());
            }),
        }
    }

    /// The rotated-domain reconstruction `ŷ / n` of the vector at `r` into `y` (`head_dim`
    /// values), and the exact power of two `n` to multiply by (1 unless σ is huge), so that
    /// the caller can rotate back before scaling up without overflow.
    fn decode_unrotated(&self, r: &mut BitReader<'_>, y: &mut [f32]) -> Result<f32, &'static str> {
        let code = r
            .read(scale::bits(SCALE_MANTISSA))
            .map_err(|_| "truncated")? as u32;
        let sigma = scale::decode(code, SCALE_MANTISSA).ok_or("scale is not finite")?;
        // Reconstruct huge vectors at a reduced scale and scale back at the end (exact powers
        // of two), saturating at ±f32::MAX, so that output is finite whenever the input was.
        let n = if sigma > 2f32.powi(60) {
            2f32.powi(70)
        } else {
            1.0
        };
        let sigma = sigma / n;
        let blocks = self.blocks();
        // Blocks are reconstructed eight at a time, block b in SIMD lane b (the E8 decoder
        // runs them side by side): `lanes[i]` holds coordinate i of the blocks' cosets,
        // `scales` σ times each block's chosen α. Every field read is in range: raw digits
        // have log2 q bits, and the mixed-radix decoder rejects digits at or above their
        // radix. Lanes past the last block keep earlier, valid fields.
        let mut scales = [0f32; 8];
        let place = |y: &mut [f32], lanes: &[f32x8; 8], scales: &[f32; 8]| {
            let points = self.book.points_of_coordinates_in_lanes(lanes);
            let s = f32x8::from(*scales);
            let blocks = f32x8::transpose(points.map(|p| s * p));
            for (block, values) in y.chunks_exact_mut(8).zip(&blocks) {
                block.copy_from_slice(values.as_array());
            }
        };
        let scale_of = |choice: u64| sigma * self.alphas[choice as usize];
        match &self.packing {
            Packing::Raw {
                choice_bits,
                index_bits,
            } => {
                // Coordinates 2j and 2j+1 of block b (2·log2 q ≤ 32 bits) in lane b of
                // `pairs[j]`, cut apart in lanes: no per-coordinate scalar work.
                let b = index_bits / 8;
                let mask = i32x8::splat((1 << b) - 1);
                let mut pairs = [[0i32; 8]; 4];
                let field_bits = choice_bits + index_bits;
                let mut read = |bits| r.read(bits).map_err(|_| "truncated");
                for group in y.chunks_mut(64) {
                    for k in 0..group.len() / 8 {
                        // A block's field in one read where it fits in 64 bits (q ≤ 2^7).
                        let (choice, quads) = if field_bits <= 64 {
                            let field = read(field_bits)?;
                            let index = field >> choice_bits;
                            let low = index & ((1 << (4 * b)) - 1);
                            (field & ((1 << choice_bits) - 1), [low, index >> (4 * b)])
                        } else {
                            (read(*choice_bits)?, [read(4 * b)?, read(4 * b)?])
                        };
                        scales[k] = scale_of(choice);
                        for (j, quad) in quads.into_iter().enumerate() {
                            pairs[2 * j][k] = (quad & ((1 << (2 * b)) - 1)) as i32;
                            pairs[2 * j + 1][k] = (quad >> (2 * b)) as i32;
                        }
                    }
                    let pairs = pairs.map(i32x8::from);
                    // The arithmetic shift's sign copies land at bit 32 − b ≥ b: masked off.
                    let lanes = std::array::from_fn(|i| {
                        ((pairs[i / 2] >> (b * (i as u32 % 2))) & mask).round_float()
                    });
                    place(group, &lanes, &scales);
                }
            }
            Packing::Joint(m) => with_joint_buffers(blocks, |digits, limbs, spare| {
                let (limbs, spare) = (&mut limbs[..m.limbs()], &mut spare[..m.limbs()]);
                r.read_limbs(limbs, m.bits()).map_err(|_| "truncated")?;
                m.decode(limbs, digits, spare)
                    .map_err(|_| "joint index out of range")?;
                let mut coords = [[0f32; 8]; 8];
                for (group, pairs) in y.chunks_mut(64).zip(digits.chunks(16)) {
                    let fields = coords.iter_mut().zip(&mut scales);
                    for ((block, scale), pair) in fields.zip(pairs.chunks_exact(2)) {
                        *scale = scale_of(pair[0]);
                        *block = self.coordinates_of_digit(pair[1]).map(|ci| ci as f32);
                    }
                    place(group, &lanes(&coords), &scales);
                }
                Ok::<(), &'static str>(())
            })?,
        }
        Ok(n)
    }
}

/// Eight blocks side by side: coordinate i of block b in lane b of vector i.
fn lanes(blocks: &[[f32; 8]; 8]) -> [f32x8; 8] {
    f32x8::transpose(std::array::from_fn(|b| f32x8::from(blocks[b])))
}

/// The squared error of each of eight blocks (`zt`, as [`lanes`] lays them out) against
/// `alpha · point` (lane b: block b, its α and its point): Σᵢ (zᵢ − α·pᵢ)² summed in index
/// order, one block per SIMD lane, with the same operations in the same order in every lane
/// (so the same bits as one block at a time).
fn block_errors(zt: &[f32x8; 8], alpha: f32x8, points: &[f32x8; 8]) -> f32x8 {
    let mut err = f32x8::ZERO;
    for (&z, &p) in zt.iter().zip(points) {
        let e = z - alpha * p;
        err += e * e;
    }
    err
}

/// Calls `f` with zeroed buffers for a joint index of `blocks` blocks: the (choice, index)
/// digits (exactly `2 · blocks`), the limbs and spare limbs (at least enough). They live on
/// the stack in the smallest size class that fits, because zeroing buffers for the largest
/// head_dim cost more than the rest of decoding a small vector.
fn with_joint_buffers<R>(
    blocks: usize,
    f: impl FnOnce(&mut [u64], &mut [u64], &mut [u64]) -> R,
) -> R {
    fn run<const DIGITS: usize, const LIMBS: usize, R>(
        blocks: usize,
        f: impl FnOnce(&mut [u64], &mut [u64], &mut [u64]) -> R,
    ) -> R {
        let (mut digits, mut limbs, mut spare) = ([0u64; DIGITS], [0u64; LIMBS], [0u64; LIMBS]);
        f(&mut digits[..2 * blocks], &mut limbs, &mut spare)
    }
    // Limbs for b blocks of at most 66 bits: ⌈66·b / 64⌉.
    match blocks {
        0..=8 => run::<16, 9, R>(blocks, f),
        9..=16 => run::<32, 17, R>(blocks, f),
        17..=32 => run::<64, 33, R>(blocks, f),
        33..=64 => run::<128, 66, R>(blocks, f),
        _ => run::<{ 2 * MAX_BLOCKS }, MAX_LIMBS, R>(blocks, f),
    }
}

/// The default codec for a target rate: among E8 Voronoi specs with k ∈ {2, 3, 4} scale
/// choices whose bits per vector fit `bits_per_value · head_dim`, the one with the highest
/// predicted SNR `6.02 · bpv − gap(k, q)`, with the gaps measured on Gaussian data at
/// d = 128.
///
/// # Errors
/// [`Error::RateUnreachable`] below the smallest code (q = 2), [`Error::UnsupportedHeadDim`].
pub fn default_for_rate(bits_per_value: f64, head_dim: usize) -> Result<CodecSpec, Error> {
    let budget = (bits_per_value * head_dim as f64 + 1e-9).floor() as u32;
    let mut best: Option<(f64, CodecSpec)> = None;
    for (scales, gap_at_16, growth) in GAUSSIAN_GAP_DB {
        for q in 2..=MAX_MIXED_Q {
            let gap_db = gap_at_16 + growth * (f64::from(q).log2() - 4.0).max(0.0);
            let spec = CodecSpec::Voronoi { q, scales };
            let codec = match VoronoiCodec::new(spec, head_dim, 0) {
                Ok(codec) => codec,
                Err(Error::InvalidParameter { .. }) => continue,
                Err(e) => return Err(e),
            };
            let bits = codec.bits_per_vector();
            let predicted_snr = 6.02 * f64::from(bits) / head_dim as f64 - gap_db;
            if bits <= budget && best.is_none_or(|(snr, _)| predicted_snr > snr) {
                best = Some((predicted_snr, spec));
            }
        }
    }
    best.map(|(_, spec)| spec).ok_or(Error::RateUnreachable {
        family: "voronoi-e8",
        bits_per_value,
        head_dim,
    })
}

/// Gap to the Shannon bound (dB) per number of scale choices: (choices, gap up to q = 16,
/// growth per doubling of q above 16), fitted to iid Gaussian vectors at d = 128 over
/// q = 4…256 (see `tests/codecs.rs` for the checked bounds). Fewer choices cover less of the
/// Gaussian's range, and overload weighs more as the granular error shrinks, so their gap
/// grows faster with the rate.
const GAUSSIAN_GAP_DB: [(u32, f64, f64); 3] = [(2, 2.5, 0.55), (3, 2.4, 0.2), (4, 2.3, 0.08)];

/// What other backends need to repeat this codec's arithmetic exactly.
impl VoronoiCodec {
    /// The per-block scale multipliers αⱼ, in choice order.
    pub fn alphas(&self) -> &[f32] {
        &self.alphas
    }

    /// `fill · q`, the divisor of the rotated vector's rms in the vector scale, rounded to
    /// f32 as the encoder computes it.
    pub fn fill_q(&self) -> f32 {
        self.fill * self.q as f32
    }
}
