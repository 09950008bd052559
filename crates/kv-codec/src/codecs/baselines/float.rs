//! Floating-point baselines: `bf16` passthrough and OCP FP8 E4M3 with per-vector or
//! per-group scales.
//!
//! # `bf16`
//! Every value rounded to bfloat16 (nearest, ties to even), 16 bits each, little-endian, so
//! a vector's bytes are exactly a `[bf16; d]` array. Finite values that round past the
//! largest bf16 (within half an ulp of `f32::MAX`) saturate to it instead of becoming
//! infinite. This is the uncompressed reference: 16 bits per value.
//!
//! # `fp8-e4m3`, `fp8-e4m3-g<n>`
//! The FP8 format of the OCP 8-bit floating point specification (OFP8, 2023), variant
//! E4M3FN, the one NVIDIA Hopper/Ada tensor cores compute with and vLLM's `fp8_e4m3` KV
//! cache stores: a sign, 4 exponent bits (bias 7), 3 mantissa bits, subnormals, no
//! infinities; only `S.1111.111` is NaN, so the largest magnitude is `1.75 · 2^8 = 448`.
//! Values are rounded to nearest, ties to even, and saturate at ±448 (the "satfinite"
//! conversion). The conversion is written out by hand on the f32 bit pattern ([`e4m3`]),
//! so it is exact and needs no hardware.
//!
//! One scale per group of `n` values (per vector by default): `s = absmax / 448`, stored
//! in the 16-bit unsigned [`scale16`] format (bf16 without its sign bit, finite up to
//! `f32::MAX`; an f16 scale would overflow for `absmax > 2.9e7`); the encoder divides by
//! the stored (rounded) scale. Decoding is `x̂ = s · e4m3(code)`. vLLM scales per tensor
//! (often by 1.0), so a per-vector or per-group scale is generous to FP8: it can only fit
//! better, at a cost of 16 bits per scale.
//!
//! Layout per group: scale (16 bits), then the `n` codes (8 bits each). Bits per vector:
//! `(d/n) · 16 + 8d`.

use super::{absmax, check_grouped_head_dim, saturate};
use crate::bits::BitWriter;
use crate::codec::VectorCodec;
use crate::error::Error;
use crate::scale::scale16;
use crate::spec::CodecSpec;

/// The bf16 passthrough (see the module docs).
#[derive(Clone, Debug)]
pub struct Bf16Codec {
    d: usize,
}

impl Bf16Codec {
    /// The codec at `head_dim`.
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] for 0 or more than 4096 values.
    pub fn new(head_dim: usize) -> Result<Self, Error> {
        check_grouped_head_dim(head_dim, 0)?;
        Ok(Self { d: head_dim })
    }
}

/// bf16 bits of a finite `v`, rounded to nearest even and saturated below infinity.
pub fn bf16_bits(v: f32) -> u16 {
    let rounded = round_to_bf16(v.to_bits()) as u16;
    if rounded & 0x7fff == 0x7f80 {
        rounded - 1
    } else {
        rounded
    }
}

/// The bf16 bits (in the low 16) of the f32 with bits `b`, not a NaN, rounded to nearest even
/// (to infinity past the largest bf16): `bf16::from_f32` without its NaN branch, so that
/// loops over it vectorise. Adding `0x7fff` plus the lowest kept bit carries into the kept
/// bits exactly when the dropped half is above one half, or one half with an odd kept part.
#[inline]
pub(crate) fn round_to_bf16(b: u32) -> u32 {
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

impl VectorCodec for Bf16Codec {
    fn spec(&self) -> CodecSpec {
        CodecSpec::Bf16
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        16 * self.d as u32
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        for (o, &v) in out.chunks_exact_mut(2).zip(x) {
            o.copy_from_slice(&bf16_bits(v).to_le_bytes());
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        if bytes.len() < 2 * self.d {
            return Err("truncated");
        }
        // Convert every value, then check them all at once: an early exit per value kept the
        // loop from being vectorised.
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
        }
        if out.iter().fold(true, |all, v| all & v.is_finite()) {
            Ok(())
        } else {
            Err("bf16 value is not finite")
        }
    }
}

/// OCP FP8 E4M3FN conversions, exact and by hand.
pub mod e4m3 {
    use super::super::rne_shift;

    /// The largest finite magnitude, `1.75 · 2^8`.
    pub const MAX: f32 = 448.0;

    /// Code of a finite `v`: rounded to nearest, ties to even, saturated to ±448. The sign is
    /// kept, so −0 and negative values that round to zero give `0x80`.
    pub fn encode(v: f32) -> u8 {
        let sign = ((v.to_bits() >> 24) & 0x80) as u8;
        let a = v.abs();
        if a >= MAX {
            return sign | 0x7e;
        }
        let bits = a.to_bits();
        let field = (bits >> 23) as i32;
        let mantissa = u64::from(bits & 0x7f_ffff);
        let exp = field - 127;
        let code = if exp >= -6 {
            // Normal E4M3 (exponent field exp + 7): keep 3 of the 23 mantissa bits. A
            // mantissa that rounds up to 8 carries into the exponent by the addition, which
            // is the correctly rounded result; below 448 it never reaches the NaN pattern.
            (((exp + 7) as u64) << 3) + rne_shift(mantissa, 20)
        } else {
            // Subnormal E4M3: count units of 2^-9. The significand (with its hidden bit for a
            // normal f32) times 2^(e − 23) is the value, so the count is significand ·
            // 2^(e − 14), a right shift by 14 − e ≥ 21 bits. Rounding up to 8 gives 0x08, the
            // smallest normal, again correctly.
            let (significand, e) = if field == 0 {
                (mantissa, -126)
            } else {
                (mantissa | 1 << 23, exp)
            };
            let shift = (14 - e) as u32;
            if shift > 40 {
                0
            } else {
                rne_shift(significand, shift)
            }
        };
        sign | code as u8
    }

    /// [`decode`] of every code, indexed by the code, with NaN for the two NaN codes.
    pub(crate) fn values() -> &'static [f32; 256] {
        static VALUES: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
            std::array::from_fn(|c| decode(c as u8).unwrap_or(f32::NAN))
        });
        &VALUES
    }

    /// The value of a code, or `None` for the two NaN codes (`0x7f`, `0xff`).
    pub fn decode(code: u8) -> Option<f32> {
        let e = i32::from((code >> 3) & 0xf);
        let m = f32::from(code & 7);
        if e == 15 && code & 7 == 7 {
            return None;
        }
        let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
        let magnitude = if e == 0 {
            m * pow2(-9)
        } else {
            (8.0 + m) * pow2(e - 10)
        };
        Some(if code & 0x80 != 0 {
            -magnitude
        } else {
            magnitude
        })
    }
}

/// FP8 E4M3 with one scale per group (see the module docs).
#[derive(Clone, Debug)]
pub struct Fp8Codec {
    spec: CodecSpec,
    d: usize,
    group: usize,
}

impl Fp8Codec {
    /// The codec for `spec` (a [`CodecSpec::Fp8E4m3`]) at `head_dim`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::Fp8E4m3`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` (≤ 4096) is a multiple of the group;
    /// parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Result<Self, Error> {
        let CodecSpec::Fp8E4m3 { group } = spec else {
            panic!("Fp8Codec::new needs an Fp8E4m3 spec, got {spec}");
        };
        spec.validate()?;
        let group = check_grouped_head_dim(head_dim, group)?;
        Ok(Self {
            spec,
            d: head_dim,
            group,
        })
    }
}

/// The scale code of a group whose largest magnitude is `m`: `m / 448`, never zero for a
/// non-zero group (the smallest code stands in when `m / 448` underflows).
fn fp8_scale_code(m: f32) -> u16 {
    if m == 0.0 {
        0
    } else {
        scale16::encode(m / e4m3::MAX).max(1)
    }
}

impl VectorCodec for Fp8Codec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        ((self.d / self.group) * 16 + 8 * self.d) as u32
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        let mut w = BitWriter::new(out);
        for g in x.chunks_exact(self.group) {
            let code = fp8_scale_code(absmax(g));
            w.write(u64::from(code), 16);
            let s = scale16::decode(code).expect("encode writes finite codes");
            // s ≥ absmax / 448 up to rounding, so v / s stays near [−448, 448]; the
            // conversion saturates what rounding pushes past it. A zero group has s = 0.
            w.write_fields(8, g.len(), |k| {
                u64::from(if s > 0.0 { e4m3::encode(g[k] / s) } else { 0 })
            });
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        // Every field is whole bytes: a group is its 16-bit scale, then one byte per value.
        let stride = 2 + self.group;
        if bytes.len() < self.d / self.group * stride {
            return Err("truncated");
        }
        for (g, field) in out
            .chunks_exact_mut(self.group)
            .zip(bytes.chunks_exact(stride))
        {
            let code = u16::from_le_bytes([field[0], field[1]]);
            if code & 0x8000 != 0 {
                return Err("scale has its sign bit set");
            }
            let s = scale16::decode(code).ok_or("scale is not finite")?;
            // Values by table, then one check for the NaN codes (which the table holds as
            // NaN): an early exit per value kept the loop from being vectorised.
            let values = e4m3::values();
            let mut nan = false;
            for (o, &c) in g.iter_mut().zip(&field[2..]) {
                let v = values[usize::from(c)];
                nan |= v.is_nan();
                *o = saturate(s * v);
            }
            if nan {
                return Err("fp8 NaN code");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;

    #[test]
    fn bf16_saturates_instead_of_overflowing() {
        assert_eq!(
            bf16::from_bits(bf16_bits(f32::MAX)).to_f32(),
            bf16::MAX.to_f32()
        );
        assert_eq!(
            bf16::from_bits(bf16_bits(-f32::MAX)).to_f32(),
            -bf16::MAX.to_f32()
        );
        assert_eq!(bf16_bits(1.0), bf16::ONE.to_bits());
    }

    #[test]
    fn fp8_decodes_by_table_as_by_hand_and_refuses_nan_codes() {
        for c in 0..=255u8 {
            let v = e4m3::values()[usize::from(c)];
            match e4m3::decode(c) {
                Some(x) => assert_eq!(v.to_bits(), x.to_bits(), "{c:#04x}"),
                None => assert!(v.is_nan(), "{c:#04x}"),
            }
        }
        let codec = Fp8Codec::new(CodecSpec::Fp8E4m3 { group: 8 }, 16).unwrap();
        let mut bytes = vec![0u8; codec.bits_per_vector() as usize / 8];
        codec.encode_vector(&[1.0; 16], &mut bytes, &mut []);
        let mut out = [0f32; 16];
        assert!(codec.decode_vector(&bytes, &mut out, &mut []).is_ok());
        // The last value of the second group: scale (2 bytes) + 8 codes each.
        bytes[19] = 0xff;
        assert_eq!(
            codec.decode_vector(&bytes, &mut out, &mut []),
            Err("fp8 NaN code")
        );
        assert_eq!(
            codec.decode_vector(&bytes[..19], &mut out, &mut []),
            Err("truncated")
        );
    }
}
