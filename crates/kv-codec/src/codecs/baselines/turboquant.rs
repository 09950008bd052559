//! TurboQuant-MSE (Zandieh, Daliri, Hadian and Mirrokni, "TurboQuant: Online Vector
//! Quantization with Near-optimal Distortion Rate", 2025): the real method, not the
//! published repository's stand-in (that is [`super::strawman`]).
//!
//! Per vector `x` of `d` values:
//! 1. `n = ‖x‖`, stored in 16 bits ([`scale16`]: bf16 without its sign, finite up to
//!    `f32::MAX`); `u = x / n`.
//! 2. `y = T·diag(signs)·u`, the random-sign Hadamard rotation of the `hadamard` crate with
//!    the configuration's seed. After a random rotation the coordinates of a unit vector are
//!    nearly independent and nearly N(0, 1/d) (exactly Beta-distributed on the sphere), so
//!    one fixed scalar quantiser serves every coordinate of every vector, with no per-vector
//!    scale beyond the norm.
//! 3. Each `yᵢ` goes to the nearest level of the `b`-bit Lloyd–Max quantiser of N(0, 1/d):
//!    the N(0, 1) design of [`super::lloyd_max`] (computed at first use, not tabulated)
//!    divided by `√d`; `b` bits per coordinate.
//! 4. Decode: `x̂ = n · diag(signs)·T·ŷ`.
//!
//! The paper's rotation is a dense random orthogonal matrix; the random-sign Hadamard
//! transform is the fast stand-in the paper's implementations and QuaRot use, with the same
//! effect on the coordinate distribution for the vectors that matter. The paper's second
//! stage (a 1-bit QJL sketch of the residual, for unbiased inner products) is not included:
//! this is the MSE-optimal variant, the one to compare reconstruction error against.
//!
//! Bits per vector: `16 + b·d`. Any head_dim the rotation supports.

use std::sync::Arc;

use hadamard::Fwht;

use super::{absmax, exponent_of, ldexp, lloyd_max};
use crate::bits::{BitReader, BitWriter};
use crate::codec::{VectorCodec, sum_of_squares};
use crate::codecs::{decode_in_rotation, decode_unrotating};
use crate::error::Error;
use crate::scale::scale16;
use crate::spec::CodecSpec;

/// TurboQuant-MSE (see the module docs).
#[derive(Clone, Debug)]
pub struct TurboQuantCodec {
    spec: CodecSpec,
    d: usize,
    bits: u32,
    /// The `2^b` levels of N(0, 1/d), ascending.
    levels: Vec<f32>,
    /// The `2^b − 1` decision thresholds between them, ascending.
    thresholds: Vec<f32>,
    fwht: Arc<Fwht>,
}

impl TurboQuantCodec {
    /// The codec for `spec` (a [`CodecSpec::TurboQuant`]) at `head_dim`, rotating with the
    /// signs of `seed`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::TurboQuant`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless the rotation supports `head_dim`; parameter
    /// errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize, seed: u64) -> Result<Self, Error> {
        let CodecSpec::TurboQuant { bits } = spec else {
            panic!("TurboQuantCodec::new needs a TurboQuant spec, got {spec}");
        };
        spec.validate()?;
        if !hadamard::is_supported(head_dim) {
            return Err(Error::UnsupportedHeadDim { head_dim });
        }
        let fwht = Arc::new(
            Fwht::with_signs(head_dim, seed).map_err(|_| Error::UnsupportedHeadDim { head_dim })?,
        );
        let design = lloyd_max::gaussian(bits);
        let sd = (head_dim as f64).sqrt();
        let levels = design.levels.iter().map(|c| (c / sd) as f32).collect();
        let thresholds = design.thresholds.iter().map(|t| (t / sd) as f32).collect();
        Ok(Self {
            spec,
            d: head_dim,
            bits,
            levels,
            thresholds,
            fwht,
        })
    }

    /// The levels of N(0, 1/d) this codec reconstructs to, ascending.
    pub fn levels(&self) -> &[f32] {
        &self.levels
    }

    /// The decision thresholds between the levels, ascending (a value goes to the cell of
    /// the number of thresholds below it).
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }
}

/// `x / ‖x‖` into `u` and the 16-bit code of `‖x‖`, without overflow or underflow: the
/// vector is first scaled by the power of two that brings its largest magnitude into
/// [1, 2). A zero vector gives the code 0 and `u = 0`.
pub(crate) fn unit_and_norm(x: &[f32], u: &mut [f32], norm_code: impl Fn(f32) -> u16) -> u16 {
    let m = absmax(x);
    if m == 0.0 {
        u.fill(0.0);
        return norm_code(0.0);
    }
    let e = exponent_of(m);
    for (ui, &xi) in u.iter_mut().zip(x) {
        *ui = ldexp(xi, -e);
    }
    let n = sum_of_squares(u).sqrt();
    for ui in u.iter_mut() {
        *ui /= n;
    }
    // ‖x‖ itself may exceed f32::MAX (the code then saturates).
    norm_code(ldexp(n, e))
}

impl VectorCodec for TurboQuantCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        16 + self.bits * self.d as u32
    }

    fn scratch_len(&self) -> usize {
        self.d
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        let y = &mut scratch[..self.d];
        let code = unit_and_norm(x, y, scale16::encode);
        self.fwht.forward_inplace(y);
        let mut w = BitWriter::new(out);
        w.write(u64::from(code), 16);
        // Cell k holds thresholds[k − 1] < v ≤ thresholds[k].
        w.write_fields(self.bits, self.d, |i| {
            self.thresholds.partition_point(|&t| t < y[i]) as u64
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

impl TurboQuantCodec {
    /// The rotated unit-vector levels of one vector into `y` (`head_dim` values), and the
    /// norm to multiply by after rotating back.
    fn decode_unrotated(&self, bytes: &[u8], y: &mut [f32]) -> Result<f32, &'static str> {
        let mut r = BitReader::new(bytes);
        let code = r.read(16).map_err(|_| "truncated")? as u16;
        if code & 0x8000 != 0 {
            return Err("norm has its sign bit set");
        }
        let n = scale16::decode(code).ok_or("norm is not finite")?;
        // Every b-bit index names a level.
        r.read_fields(self.bits, y.len(), |k, index| {
            y[k] = self.levels[index as usize];
        })
        .map_err(|_| "truncated")?;
        Ok(n)
    }
}
