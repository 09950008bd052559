//! THE STRAWMAN: the baseline the published KakeyaLattice repository calls "TurboQuant".
//! It is kept only so that the published comparison can be reproduced and put next to the
//! real method ([`super::turboquant`]); do not use it as a codec, and do not call it
//! TurboQuant.
//!
//! What it does, per vector `x` of `d` values (`d` a power of two, as in the published
//! code), at `b` bits per coordinate:
//! 1. `n = ‖x‖` as f16; `u = x / n`.
//! 2. `y = H·u` with the Sylvester–Hadamard matrix (no random signs).
//! 3. `a = max |yᵢ|` as f16; `L = 2^(b−1) − 1`; each `yᵢ` is rounded to the nearest of the
//!    `2^b − 1` uniform levels `k·a/L`, `k = −L…L` (ties to even; the encoder uses the
//!    f16-rounded `a`, as the published code does for its lattice codecs).
//! 4. Decode: `x̂ = n · H·(k·a/L)`.
//!
//! Why it is a strawman: uniform levels stretched to the vector's own maximum waste
//! resolution on the rare extreme coordinate (the spacing grows with `max |yᵢ|`, about
//! `√(2 ln 2d)/√d`), one of the `2^b` codes is never used, and 32 bits of side information
//! are spent where 16 suffice. Measured at d = 128 on Gaussian vectors (`tests/baselines.rs`),
//! the real method is better by 7 dB at 2 bits per coordinate, 3.4 dB at 3, 1.7 dB at 4,
//! 0.8 dB at 5, 0.4 dB at 6 and 0.15 dB at 7. At 8 bits the per-vector maximum adapts well
//! enough that the strawman is 0.1 dB better per coordinate, but with its extra 16 bits
//! per vector it still sits further from the Shannon bound at equal bits per value, at
//! every rate.
//!
//! One departure, for safety only: a norm beyond the f16 range (≥ 65520, which the
//! published code turns into infinity) uses the [`super::f16x`] escape, so huge inputs decode
//! to finite values. Norms below f16's range flush to zero, as in the published code.
//!
//! Layout: norm (16 bits), `a` (16 bits, IEEE f16), then `d` indices `k + L` of `b` bits.
//! Bits per vector: `32 + b·d`.

use std::sync::Arc;

use hadamard::Fwht;
use half::f16;

use super::turboquant::unit_and_norm;
use super::{absmax, f16x};
use crate::bits::{BitReader, BitWriter};
use crate::codec::VectorCodec;
use crate::codecs::{decode_in_rotation, decode_unrotating};
use crate::error::Error;
use crate::spec::CodecSpec;

/// The published repository's "TurboQuant" (see the module docs).
#[derive(Clone, Debug)]
pub struct StrawmanCodec {
    spec: CodecSpec,
    d: usize,
    bits: u32,
    fwht: Arc<Fwht>,
}

impl StrawmanCodec {
    /// The codec for `spec` (a [`CodecSpec::Strawman`]) at `head_dim`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::Strawman`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` is a power of two (the published
    /// code's restriction) up to 4096; parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Result<Self, Error> {
        let CodecSpec::Strawman { bits } = spec else {
            panic!("StrawmanCodec::new needs a Strawman spec, got {spec}");
        };
        spec.validate()?;
        if !head_dim.is_power_of_two() || head_dim > hadamard::MAX_LEN {
            return Err(Error::UnsupportedHeadDim { head_dim });
        }
        let fwht =
            Arc::new(Fwht::new(head_dim).map_err(|_| Error::UnsupportedHeadDim { head_dim })?);
        Ok(Self {
            spec,
            d: head_dim,
            bits,
            fwht,
        })
    }

    /// The largest level index `L = 2^(b−1) − 1`.
    fn levels(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }
}

impl VectorCodec for StrawmanCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        32 + self.bits * self.d as u32
    }

    fn scratch_len(&self) -> usize {
        self.d
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        let y = &mut scratch[..self.d];
        let norm_code = unit_and_norm(x, y, f16x::encode);
        self.fwht.forward_inplace(y);
        let a = f16::from_f32(absmax(y));
        let l = self.levels();
        let step = a.to_f32() / l as f32;
        let mut w = BitWriter::new(out);
        w.write(u64::from(norm_code), 16);
        w.write(u64::from(a.to_bits()), 16);
        w.write_fields(self.bits, self.d, |i| {
            let k = if step > 0.0 {
                (y[i] / step).round_ties_even().clamp(-l as f32, l as f32) as i32
            } else {
                0
            };
            (k + l) as u64
        });
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

impl StrawmanCodec {
    /// The rotated unit-vector levels of one vector into `y` (`head_dim` values), and the
    /// norm to multiply by after rotating back.
    fn decode_unrotated(&self, bytes: &[u8], y: &mut [f32]) -> Result<f32, &'static str> {
        let mut r = BitReader::new(bytes);
        let n = f16x::decode(r.read(16).map_err(|_| "truncated")? as u16)
            .ok_or("norm escape out of range")?;
        let a = f16::from_bits(r.read(16).map_err(|_| "truncated")? as u16).to_f32();
        if n.is_sign_negative() || !a.is_finite() || a.is_sign_negative() {
            return Err("norm or absmax is negative or not finite");
        }
        let l = self.levels();
        let step = a / l as f32;
        // Every value first, then one check for the index never written.
        let mut unwritten = false;
        r.read_fields(self.bits, y.len(), |i, k| {
            let k = k as i32;
            unwritten |= k > 2 * l;
            y[i] = (k - l) as f32 * step;
        })
        .map_err(|_| "truncated")?;
        if unwritten {
            return Err("index 2^b − 1 is never written");
        }
        Ok(n)
    }
}
