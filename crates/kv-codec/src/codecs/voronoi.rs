//! The default codec family: the nested-lattice (Voronoi) code E8/qE8 with per-block scale
//! choices, after a random-sign Hadamard rotation.
//!
//! Per vector `x` of `d` values (`d` a multiple of 8):
//! 1. `y = T·diag(signs)·x` (the orthonormal transform of `hadamard`, seeded signs), so the
//!    coordinates are close to iid Gaussian whatever the channel structure of `x`.
//! 2. One scale `σ = rms(y) / (fill · q)` (rounded to the 16-bit [`scale16`] format; the
//!    encoder uses the rounded value, so rounding costs nothing but a little fit), where
//!    `fill` is a design constant: the lattice-unit standard deviation, as a fraction of q,
//!    that balances granular error against overload.
//! 3. Each 8-block picks one of `k` scale multipliers `αⱼ = 2^(j·step)`: the one whose
//!    codebook point has the least squared error. A block whose nearest E8 point falls
//!    outside the Voronoi cell of qE8 (an *overload*, which would wrap around to the far side
//!    of the cell) is pulled towards the origin until its nearest point is a codebook point,
//!    so overload costs a clipping error. The index is that point's coset mod qE8.
//! 4. Decode: `ŷ_b = σ·αⱼ·(λ − q·Q(λ/q))`, then `x̂ = diag(signs)·T·ŷ`.
//!
//! Bits per vector: 16 (scale) + (d/8)·log2 k (scale choices) + d·log2 q (indices; for q not
//! a power of two one mixed-radix number over the vector's blocks).

use std::sync::Arc;

use hadamard::Fwht;
use lattice_core::{Codebook, E8, Lattice, MixedRadix, VoronoiCodebook};

use crate::bits::{BitReader, BitWriter};
use crate::codec::{VectorCodec, safe_prescale, sum_of_squares};
use crate::error::Error;
use crate::spec::CodecSpec;

/// Exponent step between successive per-block scale multipliers (αⱼ = 2^(j·step)).
///
/// This and [`fill`] were chosen by a grid search on iid Gaussian vectors at d = 128
/// (4096 vectors; q = 4…32; fill 0.18…0.38 in steps of 0.02; step 0.25…1.0), keeping the
/// setting with the least gap to the Shannon bound.
fn step(scales: u32) -> f32 {
    if scales >= 4 { 0.35 } else { 0.5 }
}

/// Standard deviation, in lattice units of E8, that the vector scale gives the rotated
/// coordinates, as a fraction of q: larger is finer (less granular error) but overloads
/// more blocks. More scale choices per block absorb more overload, so they allow more.
fn fill(q: u32, scales: u32) -> f32 {
    let base = match scales {
        1 => 0.22,
        2 => 0.28,
        _ => 0.36,
    };
    let octaves_above_8 = (q as f32).log2() - 3.0;
    // With one scale the best fill keeps falling below q = 8 too; with more it levels off.
    let slope_from = if scales == 1 {
        octaves_above_8
    } else {
        octaves_above_8.max(0.0)
    };
    base - 0.02 * slope_from
}

/// The 16-bit unsigned scale format: an f32 with its sign bit dropped and its mantissa
/// rounded to 7 bits (bf16 without the sign), so every finite positive f32 scale, up to
/// f32::MAX, has a finite code.
pub mod scale16 {
    /// Code of the f32 `v ≥ 0` (rounded to nearest even; saturates below infinity).
    pub fn encode(v: f32) -> u16 {
        let b = half::bf16::from_f32(v).to_bits() & 0x7fff;
        // Rounding may carry into the infinity pattern; keep the largest finite value.
        if b >= 0x7f80 { 0x7f7f } else { b }
    }

    /// The scale a code stands for, or `None` for the (never written) NaN/infinity codes.
    pub fn decode(code: u16) -> Option<f32> {
        let v = half::bf16::from_bits(code & 0x7fff).to_f32();
        v.is_finite().then_some(v)
    }
}

/// The E8 Voronoi codec (see the module docs).
#[derive(Clone, Debug)]
pub struct VoronoiCodec {
    spec: CodecSpec,
    d: usize,
    book: VoronoiCodebook<E8, 8>,
    q: u32,
    scales: u32,
    /// αⱼ for j < scales.
    alphas: Vec<f32>,
    scale_bits: u32,
    /// `Some` when q is not a power of two: the joint index of all blocks.
    joint: Option<MixedRadix>,
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
        let joint = if q.is_power_of_two() {
            None
        } else {
            let radix = u64::try_from(book.size()).map_err(|_| Error::InvalidParameter {
                name: "q",
                value: u64::from(q),
                allowed: "a power of two, or at most 256 for mixed-radix packing",
            })?;
            Some(MixedRadix::uniform(radix, head_dim / 8)?)
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
            scales,
            alphas,
            scale_bits: scales.trailing_zeros(),
            joint,
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
            let mut shrink = 1.0f32;
            let (index, point) = loop {
                let scaled = z.map(|v| v * shrink / alpha);
                let lambda = E8::closest_point(&scaled);
                let index = self.book.encode(&scaled);
                let point = self
                    .book
                    .point_at(index)
                    .expect("coset indices are below q^8");
                if point == lambda || shrink <= 0.0 {
                    break (index, point);
                }
                shrink -= SHRINK_STEP;
            };
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
}

/// How far an overloaded block is pulled towards the origin per step (fraction of itself).
const SHRINK_STEP: f32 = 0.0625;

impl VectorCodec for VoronoiCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        let index_bits = match &self.joint {
            Some(m) => m.bits(),
            None => self.d as u32 * self.q.trailing_zeros(),
        };
        16 + self.blocks() as u32 * self.scale_bits + index_bits
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
        let code = scale16::encode(rms / (fill(self.q, self.scales) * self.q as f32) / k);
        let sigma = scale16::decode(code).expect("encode writes finite codes") * k;
        let mut w = BitWriter::new(out);
        w.write(u64::from(code), 16);
        let mut choices = [0u32; 512];
        let mut indices = [0u128; 512];
        for (b, block) in y.chunks_exact(8).enumerate() {
            let z: [f32; 8] = if sigma > 0.0 {
                std::array::from_fn(|i| block[i] / sigma)
            } else {
                [0.0; 8]
            };
            (choices[b], indices[b]) = self.encode_block(&z);
        }
        let blocks = self.blocks();
        for &c in &choices[..blocks] {
            w.write(u64::from(c), self.scale_bits);
        }
        match &self.joint {
            None => {
                let bits = 8 * self.q.trailing_zeros();
                for &index in &indices[..blocks] {
                    w.write(index as u64, bits.min(64));
                    if bits > 64 {
                        w.write((index >> 64) as u64, bits - 64);
                    }
                }
            }
            Some(m) => {
                let digits: Vec<u64> = indices[..blocks].iter().map(|&i| i as u64).collect();
                let mut limbs = vec![0u64; m.limbs()];
                m.encode(&digits, &mut limbs);
                w.write_limbs(&limbs, m.bits());
            }
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
        let sigma = scale16::decode(r.read(16).map_err(|_| "truncated")? as u16)
            .ok_or("scale is not finite")?;
        // Reconstruct huge vectors at a reduced scale and scale back at the end (exact powers
        // of two), saturating at ±f32::MAX, so that output is finite whenever the input was.
        let k = if sigma > 2f32.powi(60) {
            2f32.powi(-70)
        } else {
            1.0
        };
        let sigma = sigma * k;
        let blocks = self.blocks();
        let mut choices = [0usize; 512];
        for c in &mut choices[..blocks] {
            *c = r.read(self.scale_bits).map_err(|_| "truncated")? as usize;
        }
        let mut indices = [0u128; 512];
        match &self.joint {
            None => {
                let bits = 8 * self.q.trailing_zeros();
                for index in &mut indices[..blocks] {
                    *index = u128::from(r.read(bits.min(64)).map_err(|_| "truncated")?);
                    if bits > 64 {
                        *index |= u128::from(r.read(bits - 64).map_err(|_| "truncated")?) << 64;
                    }
                }
            }
            Some(m) => {
                let mut limbs = vec![0u64; m.limbs()];
                r.read_limbs(&mut limbs, m.bits())
                    .map_err(|_| "truncated")?;
                let mut digits = vec![0u64; blocks];
                let mut spare = vec![0u64; m.limbs()];
                m.decode(&limbs, &mut digits, &mut spare)
                    .map_err(|_| "joint index out of range")?;
                for (index, d) in indices.iter_mut().zip(digits) {
                    *index = u128::from(d);
                }
            }
        }
        for (b, block) in y.chunks_exact_mut(8).enumerate() {
            let point = self
                .book
                .point_at(indices[b])
                .map_err(|_| "block index out of range")?;
            let s = sigma * self.alphas[choices[b]];
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

/// The default codec for a target rate: the E8 Voronoi spec with the most bits per vector
/// that stay within `bits_per_value · head_dim` (whole bytes per vector counted).
///
/// Among the fitting (q, k ∈ {2, 4}) it keeps the one with the highest predicted SNR,
/// `6.02 · bpv − gap(k)`, with the gaps measured on Gaussian data at d = 128 (about 2.8 dB
/// for k = 2 and 2.65 dB for k = 4 over q = 4…32).
///
/// # Errors
/// [`Error::RateUnreachable`] below the smallest code (q = 2), [`Error::UnsupportedHeadDim`].
pub fn default_for_rate(bits_per_value: f64, head_dim: usize) -> Result<CodecSpec, Error> {
    let budget = (bits_per_value * head_dim as f64).floor() as usize;
    let mut best: Option<(usize, CodecSpec)> = None;
    for q in 2..=256u32 {
        let spec = CodecSpec::Voronoi {
            q,
            scales: DEFAULT_SCALES,
        };
        let codec = VoronoiCodec::new(spec, head_dim, 0)?;
        let bits = 8 * codec.bytes_per_vector();
        if bits <= budget && best.is_none_or(|(b, _)| bits >= b) {
            best = Some((bits, spec));
        }
    }
    best.map(|(_, spec)| spec).ok_or(Error::RateUnreachable {
        family: "voronoi-e8",
        bits_per_value,
        head_dim,
    })
}

/// Scale choices per block used by [`default_for_rate`].
pub const DEFAULT_SCALES: u32 = 2;
