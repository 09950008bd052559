//! llama.cpp's `q8_0` and `q4_0` block formats (ggml, `ggml-quants.c`), applied after a
//! random-sign Hadamard rotation, as llama.cpp now rotates Q/K/V before quantising its KV
//! cache (and as QuaRot/SpinQuant do).
//!
//! The vector is rotated, `y = T·diag(signs)·x` (the `hadamard` transform with the
//! configuration's seed), then cut into blocks of 32 values, each coded as ggml's reference
//! quantisers `quantize_row_q8_0_ref` / `quantize_row_q4_0_ref` do:
//!
//! * `q8_0`: `d = absmax / 127` as f16, `q = round(y / d)` as `i8` in −127…127;
//!   `ŷ = q · d`. 34 bytes per block, 8.5 bits per value.
//! * `q4_0`: `max` = the signed value of largest magnitude (the first one on ties),
//!   `d = max / −8` as f16 (so `max` lands on the extra level −8), `q = min(15, ⌊y / d + 8.5⌋)`
//!   in 0…15; `ŷ = (q − 8) · d`. 18 bytes per block, 4.5 bits per value.
//!
//! A block's bytes are laid out exactly as ggml's `block_q8_0` / `block_q4_0`: the f16 `d`
//! (little-endian), then the quants; for `q4_0` byte `j` holds value `j` in its low nibble and
//! value `j + 16` in its high nibble. So a block is bit-identical to ggml's wherever the
//! quants agree. They can differ from ggml in three places, none of which matters for
//! quality: the encoder divides by the *stored* (f16-rounded) `d` rather than multiplying by
//! the reciprocal of the unrounded one; `q8_0` rounds ties to even where ggml's `roundf`
//! rounds them away from zero; and a scale beyond the f16 range uses the [`super::f16x`]
//! escape (the f16 infinity patterns) where ggml would store infinity. Like ggml, a block
//! whose scale is below f16's range decodes to zeros.
//!
//! Bits per vector: `(d/32) · 272` for `q8_0`, `(d/32) · 144` for `q4_0`. `head_dim` must be a
//! multiple of 32 that the rotation supports (32, 64, 96, 128, 160, 192, 224, 256, …).

use std::sync::Arc;

use hadamard::Fwht;

use super::{absmax, exponent_of, f16x, ldexp, saturate};
use crate::codec::VectorCodec;
use crate::error::Error;
use crate::spec::CodecSpec;

/// Values per block (ggml's `QK8_0` and `QK4_0`).
pub const BLOCK: usize = 32;

/// Bytes of a `q8_0` block: f16 scale and 32 `i8`.
pub const Q8_0_BYTES: usize = 2 + BLOCK;

/// Bytes of a `q4_0` block: f16 scale and 32 nibbles.
pub const Q4_0_BYTES: usize = 2 + BLOCK / 2;

/// Codes one `q8_0` block of `y · 2^e` (the caller scaled the vector by `2^-e` to keep the
/// rotation in range; the stored scale is that of the unscaled values).
fn q8_0_block(y: &[f32], e: i32, out: &mut [u8]) {
    let code = f16x::encode(ldexp(absmax(y) / 127.0, e));
    out[..2].copy_from_slice(&code.to_le_bytes());
    let step = ldexp(
        f16x::decode(code).expect("encode writes decodable codes"),
        -e,
    );
    for (o, &v) in out[2..].iter_mut().zip(y) {
        let q = if step > 0.0 {
            (v / step).round_ties_even().clamp(-127.0, 127.0)
        } else {
            0.0
        };
        *o = q as i8 as u8;
    }
}

/// Codes one `q4_0` block of `y · 2^e` (as [`q8_0_block`]).
fn q4_0_block(y: &[f32], e: i32, out: &mut [u8]) {
    // The signed value of largest magnitude, the first one on ties (ggml's rule).
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in y {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let code = f16x::encode(ldexp(max / -8.0, e));
    out[..2].copy_from_slice(&code.to_le_bytes());
    let step = ldexp(
        f16x::decode(code).expect("encode writes decodable codes"),
        -e,
    );
    let q = |v: f32| -> u8 {
        if step == 0.0 {
            8
        } else {
            ((v / step) + 8.5).floor().clamp(0.0, 15.0) as u8
        }
    };
    let (lo, hi) = y.split_at(BLOCK / 2);
    for ((o, &a), &b) in out[2..].iter_mut().zip(lo).zip(hi) {
        *o = q(a) | q(b) << 4;
    }
}

/// The scale of a block's bytes (either format), or why it is invalid.
fn block_scale(bytes: &[u8]) -> Result<f32, &'static str> {
    f16x::decode(u16::from_le_bytes([bytes[0], bytes[1]])).ok_or("scale escape out of range")
}

/// The quants of a block times `step` (the block's scale, possibly rescaled by a power of
/// two), into `out`.
fn dequantize_block(
    bits: u32,
    bytes: &[u8],
    step: f32,
    out: &mut [f32],
) -> Result<(), &'static str> {
    if bits == 8 {
        for (o, &b) in out.iter_mut().zip(&bytes[2..]) {
            let q = b as i8;
            if q == i8::MIN {
                return Err("q8_0 level -128 is never written");
            }
            *o = f32::from(q) * step;
        }
    } else {
        let (lo, hi) = out.split_at_mut(BLOCK / 2);
        for ((a, b), &byte) in lo.iter_mut().zip(hi).zip(&bytes[2..]) {
            *a = (f32::from(byte & 0xf) - 8.0) * step;
            *b = (f32::from(byte >> 4) - 8.0) * step;
        }
    }
    Ok(())
}

/// ggml's `quantize_row_q8_0_ref` on one block, with the differences of the module docs:
/// the bytes of a `block_q8_0`.
pub fn quantize_q8_0_block(y: &[f32; BLOCK]) -> [u8; Q8_0_BYTES] {
    let mut out = [0u8; Q8_0_BYTES];
    q8_0_block(y, 0, &mut out);
    out
}

/// ggml's `quantize_row_q4_0_ref` on one block, with the differences of the module docs:
/// the bytes of a `block_q4_0`.
pub fn quantize_q4_0_block(y: &[f32; BLOCK]) -> [u8; Q4_0_BYTES] {
    let mut out = [0u8; Q4_0_BYTES];
    q4_0_block(y, 0, &mut out);
    out
}

/// The values of a `block_q8_0`.
///
/// # Errors
/// For a scale escape out of range or the never-written level −128.
pub fn dequantize_q8_0_block(block: &[u8; Q8_0_BYTES]) -> Result<[f32; BLOCK], &'static str> {
    let mut out = [0f32; BLOCK];
    dequantize_block(8, block, block_scale(block)?, &mut out)?;
    Ok(out.map(saturate))
}

/// The values of a `block_q4_0`.
///
/// # Errors
/// For a scale escape out of range.
pub fn dequantize_q4_0_block(block: &[u8; Q4_0_BYTES]) -> Result<[f32; BLOCK], &'static str> {
    let mut out = [0f32; BLOCK];
    dequantize_block(4, block, block_scale(block)?, &mut out)?;
    Ok(out.map(saturate))
}

/// llama.cpp `q8_0` / `q4_0` after rotation (see the module docs).
#[derive(Clone, Debug)]
pub struct LlamaCppCodec {
    spec: CodecSpec,
    d: usize,
    bits: u32,
    fwht: Arc<Fwht>,
}

impl LlamaCppCodec {
    /// The codec for `spec` (a [`CodecSpec::LlamaCpp`]) at `head_dim`, rotating with the
    /// signs of `seed`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::LlamaCpp`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` is a multiple of 32 that the rotation
    /// supports; parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize, seed: u64) -> Result<Self, Error> {
        let CodecSpec::LlamaCpp { bits } = spec else {
            panic!("LlamaCppCodec::new needs a LlamaCpp spec, got {spec}");
        };
        spec.validate()?;
        if head_dim == 0 || !head_dim.is_multiple_of(BLOCK) || !hadamard::is_supported(head_dim) {
            return Err(Error::UnsupportedHeadDim { head_dim });
        }
        let fwht = Arc::new(
            Fwht::with_signs(head_dim, seed).map_err(|_| Error::UnsupportedHeadDim { head_dim })?,
        );
        Ok(Self {
            spec,
            d: head_dim,
            bits,
            fwht,
        })
    }

    fn blocks(&self) -> usize {
        self.d / BLOCK
    }

    fn block_bytes(&self) -> usize {
        if self.bits == 8 {
            Q8_0_BYTES
        } else {
            Q4_0_BYTES
        }
    }
}

impl VectorCodec for LlamaCppCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        (self.blocks() * self.block_bytes() * 8) as u32
    }

    fn scratch_len(&self) -> usize {
        self.d
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        let y = &mut scratch[..self.d];
        // Scale by a power of two so the butterflies cannot overflow; the blocks store the
        // scales of the unscaled values.
        let m = absmax(x);
        let e = if m > 0.0 { exponent_of(m) } else { 0 };
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = ldexp(xi, -e);
        }
        self.fwht.forward_inplace(y);
        for (block, o) in y
            .chunks_exact(BLOCK)
            .zip(out.chunks_exact_mut(self.block_bytes()))
        {
            if self.bits == 8 {
                q8_0_block(block, e, o);
            } else {
                q4_0_block(block, e, o);
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
        let e = self.decode_unrotated(bytes, y)?;
        self.fwht.inverse(y, out);
        unscale(out, e);
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
        let e = self.decode_unrotated(bytes, out)?;
        unscale(out, e);
        Ok(())
    }
}

/// Multiplies by `2^e`, saturating.
fn unscale(out: &mut [f32], e: i32) {
    for o in out.iter_mut() {
        *o = saturate(ldexp(*o, e));
    }
}

impl LlamaCppCodec {
    /// The rotated blocks of one vector into `y` (`head_dim` values), divided by `2^e`, and
    /// the exponent `e` (one power of two for the whole vector keeps the inverse
    /// butterflies in range).
    fn decode_unrotated(&self, bytes: &[u8], y: &mut [f32]) -> Result<i32, &'static str> {
        let bb = self.block_bytes();
        if bytes.len() < self.blocks() * bb {
            return Err("truncated");
        }
        let mut top = 0f32;
        for block in bytes.chunks_exact(bb).take(self.blocks()) {
            top = top.max(block_scale(block)?.abs());
        }
        let e = if top > 0.0 { exponent_of(top) } else { 0 };
        for (ys, block) in y.chunks_exact_mut(BLOCK).zip(bytes.chunks_exact(bb)) {
            let step = ldexp(block_scale(block)?, -e);
            dequantize_block(self.bits, block, step, ys)?;
        }
        Ok(e)
    }
}
