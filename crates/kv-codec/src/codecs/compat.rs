//! Compatibility mode: the published KakeyaLattice pipeline, packed into real bits.
//!
//! Per vector: `n = ‖x‖` stored as f16; `u = x / n`; `y = H·u` with the Sylvester–Hadamard
//! matrix (no random signs); `qmax = max |yᵢ|` stored as f16; `s = qmax₁₆ / Q`; every 4- or
//! 8-block of `y / s` goes to a box codebook Λ ∩ [−Q, Q]^n. Decoding is `x̂ = n₁₆ · Hᵀ(s·λ)`.
//! Using the f16-rounded `qmax` for the encoder's scale (as the published code does) is what
//! makes our outputs land on the published ones.
//!
//! Departures, both documented in FORMAT.md:
//! * E8 blocks that reach past the box are snapped to the nearest point of E8 *inside* the
//!   box instead of being clamped coordinate-wise, which yields non-lattice points.
//! * A norm the f16 cannot hold as a normal number (≥ 65520, which the published code turns
//!   into infinity, or below 2^-14, which it flushes towards zero) is stored with the
//!   otherwise unused sign bit set and the f32's top 15 bits after it (exponent and 7
//!   mantissa bits), so huge and tiny vectors decode to finite, non-zero values.
//!
//! Layout per vector: norm (16 bits), qmax (16 bits), then the block indices: `⌈log2 M⌉` bits
//! each, or with `joint` one mixed-radix number of `⌈log2 M^(d/n)⌉` bits.

use std::sync::Arc;

use hadamard::Fwht;
use half::f16;
use lattice_core::{Codebook, D4Box, E8Box, MixedRadix};

use crate::bits::{BitReader, BitWriter};
use crate::codec::{VectorCodec, norm};
use crate::codecs::{decode_in_rotation, decode_unrotating};
// Saturating rather than overflowing: a corrupt or escaped norm must not yield infinities.
use crate::error::Error;
use crate::spec::{CodecSpec, CompatLattice};

/// The box codebook of either lattice, with the dimension erased to slices.
#[derive(Clone, Debug)]
enum BoxBook {
    D4(D4Box),
    E8(E8Box),
}

impl BoxBook {
    fn block(&self) -> usize {
        match self {
            Self::D4(_) => 4,
            Self::E8(_) => 8,
        }
    }

    fn size(&self) -> u128 {
        match self {
            Self::D4(b) => b.size(),
            Self::E8(b) => b.size(),
        }
    }

    /// Quantises `z` in place to the nearest box point and returns its index.
    fn encode(&self, z: &mut [f32]) -> u128 {
        match self {
            Self::D4(b) => {
                let x: &mut [f32; 4] = z.try_into().expect("D4 block");
                *x = b.quantize(x);
                b.index_of(x).expect("quantised points are in the codebook")
            }
            Self::E8(b) => {
                let x: &mut [f32; 8] = z.try_into().expect("E8 block");
                *x = b.quantize(x);
                b.index_of(x).expect("quantised points are in the codebook")
            }
        }
    }

    fn decode(&self, index: u128, out: &mut [f32]) -> Result<(), &'static str> {
        let bad = |_| "block index out of range";
        match self {
            Self::D4(b) => out.copy_from_slice(&b.point_at(index).map_err(bad)?),
            Self::E8(b) => out.copy_from_slice(&b.point_at(index).map_err(bad)?),
        }
        Ok(())
    }
}

/// The published KakeyaLattice codec (see the module docs).
#[derive(Clone, Debug)]
pub struct CompatCodec {
    spec: CodecSpec,
    d: usize,
    q: u32,
    book: BoxBook,
    /// Bits per block index when packed separately.
    block_bits: u32,
    /// The joint index system when `joint` is set.
    joint: Option<MixedRadix>,
    fwht: Arc<Fwht>,
}

/// f16 bit pattern of a norm, with the documented escape for norms beyond the f16 range.
fn norm_to_bits(n: f32) -> u16 {
    let h = f16::from_f32(n);
    if h.is_normal() || n == 0.0 {
        h.to_bits()
    } else {
        // Round the f32 to its top 16 bits (bf16, ties to even); the sign bit is 0 for a norm
        // and is set as the escape flag.
        let b = half::bf16::from_f32(n).to_bits();
        0x8000 | b
    }
}

fn norm_from_bits(bits: u16) -> Result<f32, &'static str> {
    let v = if bits & 0x8000 == 0 {
        f16::from_bits(bits).to_f32()
    } else {
        half::bf16::from_bits(bits & 0x7fff).to_f32()
    };
    if v.is_finite() {
        Ok(v)
    } else {
        Err("norm is not finite")
    }
}

impl CompatCodec {
    /// The codec for `spec` (a [`CodecSpec::Compat`]) at `head_dim`.
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` is a power of two that is a multiple of
    /// the block size (the published codec's restriction); parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Result<Self, Error> {
        let CodecSpec::Compat { lattice, q, joint } = spec else {
            panic!("CompatCodec::new needs a Compat spec, got {spec}");
        };
        spec.validate()?;
        let book = match lattice {
            CompatLattice::D4 => BoxBook::D4(D4Box::new(q)?),
            CompatLattice::E8 => BoxBook::E8(E8Box::new(q)?),
        };
        if !head_dim.is_power_of_two() || !(8..=hadamard::MAX_LEN).contains(&head_dim) {
            return Err(Error::UnsupportedHeadDim { head_dim });
        }
        let size = book.size();
        let block_bits = 128 - (size - 1).leading_zeros();
        let blocks = head_dim / book.block();
        let joint = if joint {
            let radix = u64::try_from(size).map_err(|_| Error::InvalidParameter {
                name: "q",
                value: u64::from(q),
                allowed: "a box of at most 2^64 points for joint packing (E8: Q ≤ 124)",
            })?;
            Some(MixedRadix::uniform(radix, blocks)?)
        } else {
            None
        };
        let fwht =
            Arc::new(Fwht::new(head_dim).map_err(|_| Error::UnsupportedHeadDim { head_dim })?);
        Ok(Self {
            spec,
            d: head_dim,
            q,
            book,
            block_bits,
            joint,
            fwht,
        })
    }

    fn blocks(&self) -> usize {
        self.d / self.book.block()
    }
}

impl VectorCodec for CompatCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        let index_bits = match &self.joint {
            Some(m) => m.bits(),
            None => self.block_bits * self.blocks() as u32,
        };
        32 + index_bits
    }

    fn scratch_len(&self) -> usize {
        // y, plus digits and two limb buffers for joint packing (held as f32-sized slots is
        // awkward, so joint packing allocates its small integer buffers per call instead).
        self.d
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        let y = &mut scratch[..self.d];
        let n = norm(x);
        let norm_bits = norm_to_bits(n);
        let mut w = BitWriter::new(out);
        if n == 0.0 {
            y.fill(0.0);
            w.write(u64::from(norm_bits), 16);
            w.write(u64::from(f16::ZERO.to_bits()), 16);
        } else {
            for (yi, &xi) in y.iter_mut().zip(x) {
                *yi = xi / n;
            }
            self.fwht.forward_inplace(y);
            let qmax = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            let qmax16 = f16::from_f32(qmax);
            let s = qmax16.to_f32() / self.q as f32;
            for v in y.iter_mut() {
                *v /= s;
            }
            w.write(u64::from(norm_bits), 16);
            w.write(u64::from(qmax16.to_bits()), 16);
        }
        let bs = self.book.block();
        match &self.joint {
            None => {
                for block in y.chunks_exact_mut(bs) {
                    let index = self.book.encode(block);
                    w.write(index as u64, self.block_bits.min(64));
                    if self.block_bits > 64 {
                        w.write((index >> 64) as u64, self.block_bits - 64);
                    }
                }
            }
            Some(m) => {
                let digits: Vec<u64> = y
                    .chunks_exact_mut(bs)
                    .map(|b| self.book.encode(b) as u64)
                    .collect();
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
        decode_unrotating(&self.fwht, out, scratch, |y| {
            self.decode_unrotated(bytes, y)
        })
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
        decode_in_rotation(bytes, out, |b, y| self.decode_unrotated(b, y))
    }
}

impl CompatCodec {
    /// The rotated unit-vector reconstruction `s·λ` of one vector into `y` (`head_dim`
    /// values), and the norm to multiply by after rotating back.
    fn decode_unrotated(&self, bytes: &[u8], y: &mut [f32]) -> Result<f32, &'static str> {
        let mut r = BitReader::new(bytes);
        let n = norm_from_bits(r.read(16).map_err(|_| "truncated")? as u16)?;
        let qmax = f16::from_bits(r.read(16).map_err(|_| "truncated")? as u16).to_f32();
        if !qmax.is_finite() || qmax < 0.0 {
            return Err("scale is not finite and non-negative");
        }
        let s = qmax / self.q as f32;
        let bs = self.book.block();
        match &self.joint {
            None => {
                for block in y.chunks_exact_mut(bs) {
                    let mut index =
                        u128::from(r.read(self.block_bits.min(64)).map_err(|_| "truncated")?);
                    if self.block_bits > 64 {
                        index |= u128::from(r.read(self.block_bits - 64).map_err(|_| "truncated")?)
                            << 64;
                    }
                    self.book.decode(index, block)?;
                }
            }
            Some(m) => {
                let mut limbs = vec![0u64; m.limbs()];
                r.read_limbs(&mut limbs, m.bits())
                    .map_err(|_| "truncated")?;
                let mut digits = vec![0u64; self.blocks()];
                let mut spare = vec![0u64; m.limbs()];
                m.decode(&limbs, &mut digits, &mut spare)
                    .map_err(|_| "joint index out of range")?;
                for (block, &digit) in y.chunks_exact_mut(bs).zip(&digits) {
                    self.book.decode(u128::from(digit), block)?;
                }
            }
        }
        for v in y.iter_mut() {
            *v *= s;
        }
        Ok(n)
    }
}
