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

use std::sync::Arc;

use hadamard::Fwht;
use lattice_core::{Codebook, E8, Lattice, MixedRadix, VoronoiCodebook};

use crate::bits::{BitReader, BitWriter};
use crate::codec::{VectorCodec, safe_prescale, sum_of_squares};
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
        3 => (0.32, 0.02),
        _ => (0.34, 0.015),
    };
    let octaves_above_8 = (q as f32).log2() - 3.0;
    // With one scale the best fill keeps falling below q = 8 too; with more it levels off.
    let from = if scales == 1 {
        octaves_above_8
    } else {
        octaves_above_8.max(0.0)
    };
    base - slope * from
}

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

    /// Chooses the scale multiplier and the coset index of one block of `y / σ`: the choice
    /// with the least squared error, where an overloaded block (its nearest E8 point outside
    /// the cell of qE8) is first pulled towards the origin until its nearest point is a
    /// codebook point, so that overload costs a clipping error, not a wrap-around.
    fn encode_block(&self, z: &[f32; 8]) -> (u32, u128) {
        let mut best = (0u32, 0u128, f32::INFINITY);
        for (j, &alpha) in self.alphas.iter().enumerate() {
            let (index, point) = self.clip_to_cell(&z.map(|v| v / alpha));
            let mut err = 0f32;
            for i in 0..8 {
                let e = z[i] - alpha * point[i];
                err += e * e;
            }
            if err < best.2 {
                best = (j as u32, index, err);
            }
        }
        (best.0, best.1)
    }

    /// The codebook point (and its index) for `v`: its nearest E8 point if that lies in the
    /// cell of qE8; otherwise the nearest E8 point of `t·v` for the largest `t` on a grid of
    /// 1/2^[`CLIP_BISECTIONS`] found by bisection whose nearest point lies in the cell (the
    /// origin's always does), which keeps the clipping error small even at high rates.
    fn clip_to_cell(&self, v: &[f32; 8]) -> (u128, [f32; 8]) {
        let try_at = |t: f32| {
            let lambda = E8::closest_point(&v.map(|x| x * t));
            let index = self.book.coset_index(&lambda);
            let point = self
                .book
                .point_at(index)
                .expect("coset indices are below q^8");
            (point == lambda, index, point)
        };
        let (inside, index, point) = try_at(1.0);
        if inside {
            return (index, point);
        }
        let (mut lo, mut hi) = (0.0f32, 1.0f32);
        let mut found = try_at(0.0);
        for _ in 0..CLIP_BISECTIONS {
            let mid = 0.5 * (lo + hi);
            let attempt = try_at(mid);
            if attempt.0 {
                lo = mid;
                found = attempt;
            } else {
                hi = mid;
            }
        }
        (found.1, found.2)
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

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        let y = &mut scratch[..self.d];
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
        let mut w = BitWriter::new(out);
        w.write(u64::from(code), scale::bits(SCALE_MANTISSA));
        let mut fields = [0u64; 2 * MAX_BLOCKS];
        for (b, block) in y.chunks_exact(8).enumerate() {
            let z: [f32; 8] = if sigma > 0.0 {
                std::array::from_fn(|i| block[i] / sigma)
            } else {
                [0.0; 8]
            };
            let (choice, index) = self.encode_block(&z);
            // Only joint packing reads `fields`; it requires q ≤ 256, so indices fit a u64.
            fields[2 * b] = u64::from(choice);
            fields[2 * b + 1] = index as u64;
            if let Packing::Raw {
                choice_bits,
                index_bits,
            } = self.packing
            {
                w.write(u64::from(choice), choice_bits);
                w.write(index as u64, index_bits.min(64));
                if index_bits > 64 {
                    w.write((index >> 64) as u64, index_bits - 64);
                }
            }
        }
        if let Packing::Joint(m) = &self.packing {
            let mut limbs = [0u64; MAX_LIMBS];
            let limbs = &mut limbs[..m.limbs()];
            m.encode(&fields[..2 * self.blocks()], limbs);
            w.write_limbs(limbs, m.bits());
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        let y = &mut scratch[..self.d];
        let mut r = BitReader::new(bytes);
        let code = r
            .read(scale::bits(SCALE_MANTISSA))
            .map_err(|_| "truncated")? as u32;
        let sigma = scale::decode(code, SCALE_MANTISSA).ok_or("scale is not finite")?;
        // Reconstruct huge vectors at a reduced scale and scale back at the end (exact powers
        // of two), saturating at ±f32::MAX, so that output is finite whenever the input was.
        let k = if sigma > 2f32.powi(60) {
            2f32.powi(-70)
        } else {
            1.0
        };
        let sigma = sigma * k;
        let blocks = self.blocks();
        let mut fields = [(0usize, 0u128); MAX_BLOCKS];
        match &self.packing {
            Packing::Raw {
                choice_bits,
                index_bits,
            } => {
                for f in &mut fields[..blocks] {
                    f.0 = r.read(*choice_bits).map_err(|_| "truncated")? as usize;
                    f.1 = u128::from(r.read((*index_bits).min(64)).map_err(|_| "truncated")?);
                    if *index_bits > 64 {
                        f.1 |= u128::from(r.read(index_bits - 64).map_err(|_| "truncated")?) << 64;
                    }
                }
            }
            Packing::Joint(m) => {
                let mut limbs = [0u64; MAX_LIMBS];
                let mut spare = [0u64; MAX_LIMBS];
                let mut digits = [0u64; 2 * MAX_BLOCKS];
                let limbs = &mut limbs[..m.limbs()];
                r.read_limbs(limbs, m.bits()).map_err(|_| "truncated")?;
                m.decode(limbs, &mut digits[..2 * blocks], &mut spare[..m.limbs()])
                    .map_err(|_| "joint index out of range")?;
                for (f, pair) in fields.iter_mut().zip(digits.chunks_exact(2)) {
                    *f = (pair[0] as usize, u128::from(pair[1]));
                }
            }
        }
        for (block, &(choice, index)) in y.chunks_exact_mut(8).zip(&fields[..blocks]) {
            let point = self
                .book
                .point_at(index)
                .map_err(|_| "block index out of range")?;
            let s = sigma * self.alphas[choice];
            for i in 0..8 {
                block[i] = s * point[i];
            }
        }
        self.fwht.inverse(y, out);
        if k != 1.0 {
            for v in out.iter_mut() {
                *v = (*v / k).clamp(-f32::MAX, f32::MAX);
            }
        }
        Ok(())
    }
}

/// The default codec for a target rate: among E8 Voronoi specs with k ∈ {2, 3, 4} scale
/// choices whose bits per vector fit `bits_per_value · head_dim`, the one with the highest
/// predicted SNR `6.02 · bpv − gap(k)`, with the gaps measured on Gaussian data at d = 128.
///
/// # Errors
/// [`Error::RateUnreachable`] below the smallest code (q = 2), [`Error::UnsupportedHeadDim`].
pub fn default_for_rate(bits_per_value: f64, head_dim: usize) -> Result<CodecSpec, Error> {
    let budget = (bits_per_value * head_dim as f64 + 1e-9).floor() as u32;
    let mut best: Option<(f64, CodecSpec)> = None;
    for (scales, gap_db) in GAUSSIAN_GAP_DB {
        for q in 2..=MAX_MIXED_Q {
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

/// Mean gap to the Shannon bound (dB) per number of scale choices, measured on iid Gaussian
/// vectors at d = 128 over q = 4…32 (see `tests/codecs.rs` for the checked bounds).
const GAUSSIAN_GAP_DB: [(u32, f64); 3] = [(2, 2.6), (3, 2.5), (4, 2.4)];

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
