//! Per-token integer baselines: `int<b>` and `int<b>-g<n>` (b = 2…8).
//!
//! Symmetric absmax quantisation of each token's vector (or of each group of its values):
//! the plain per-token INT8/INT4 KV cache, with no rotation, which is how engines that
//! quantise per token do it. Engines differ in details this baseline leaves out (LMDeploy
//! and KIVI (Liu et al. 2024) add a zero point; KIVI also quantises K per channel and keeps
//! recent tokens in full precision). Without rotation the outlier channels of real K are
//! costly: on SmolLM2's K, per-token int4 loses about 5 dB to a rotated code, about one bit
//! per value. The rotated integer blocks are the llama.cpp baselines
//! ([`super::llama_cpp`]).
//!
//! For each group of `n` values (the whole vector by default), with `L = 2^(b−1) − 1`:
//! the scale `d = absmax / L` is rounded to f16 (the [`super::f16x`] format: IEEE f16,
//! with an escape that keeps huge inputs finite), and each value is
//! `q = clamp(round_ties_even(x / d), −L, L)` with the stored `d`. Decoding is `x̂ = q · d`.
//! The 2^b − 1 levels are symmetric around zero, so zero is exact and the level `−2^(b−1)`
//! is never used. A group whose scale is below f16's range (`absmax/L < 2^-25`) codes as
//! zeros, as an engine's f16 scale would.
//!
//! Layout per group: the scale (16 bits), then the `n` values as `b`-bit two's complement
//! (so `int8` values are plain `i8` bytes). Bits per vector: `(d/n) · 16 + b · d`.

use super::{absmax, check_grouped_head_dim, f16x, saturate};
use crate::bits::{BitReader, BitWriter};
use crate::codec::VectorCodec;
use crate::error::Error;
use crate::spec::CodecSpec;
use lattice_core::round_ties_even_x8;
use wide::{f32x8, i16x8, i32x8, u8x16};

/// Symmetric absmax integers per group (see the module docs).
#[derive(Clone, Debug)]
pub struct IntCodec {
    spec: CodecSpec,
    d: usize,
    bits: u32,
    group: usize,
}

impl IntCodec {
    /// The codec for `spec` (a [`CodecSpec::Int`]) at `head_dim`.
    ///
    /// # Panics
    /// If `spec` is not a [`CodecSpec::Int`].
    ///
    /// # Errors
    /// [`Error::UnsupportedHeadDim`] unless `head_dim` (≤ 4096) is a multiple of the group;
    /// parameter errors from the spec.
    pub fn new(spec: CodecSpec, head_dim: usize) -> Result<Self, Error> {
        let CodecSpec::Int { bits, group } = spec else {
            panic!("IntCodec::new needs an Int spec, got {spec}");
        };
        spec.validate()?;
        let group = check_grouped_head_dim(head_dim, group)?;
        Ok(Self {
            spec,
            d: head_dim,
            bits,
            group,
        })
    }

    /// The largest level, `L = 2^(b−1) − 1`.
    fn levels(&self) -> i32 {
        (1 << (self.bits - 1)) - 1
    }
}

impl VectorCodec for IntCodec {
    fn spec(&self) -> CodecSpec {
        self.spec
    }

    fn head_dim(&self) -> usize {
        self.d
    }

    fn bits_per_vector(&self) -> u32 {
        ((self.d / self.group) * 16) as u32 + self.bits * self.d as u32
    }

    fn scratch_len(&self) -> usize {
        0
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], _scratch: &mut [f32]) {
        match self.bits {
            2 => self.encode_bytewise::<2>(x, out),
            4 => self.encode_bytewise::<4>(x, out),
            8 => self.encode_bytewise::<8>(x, out),
            _ => self.encode_fields(x, out),
        }
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        _scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        match self.bits {
            2 => self.decode_bytewise::<2>(bytes, out),
            4 => self.decode_bytewise::<4>(bytes, out),
            8 => self.decode_bytewise::<8>(bytes, out),
            _ => self.decode_fields(bytes, out),
        }
    }
}

impl IntCodec {
    /// The scale code of group `g` and the scale it decodes to, which the encoders quantise
    /// with.
    fn group_code(&self, g: &[f32]) -> (u16, f32) {
        let code = f16x::encode(absmax(g) / self.levels() as f32);
        (
            code,
            f16x::decode(code).expect("encode writes decodable codes"),
        )
    }

    /// Bytes per group when groups are whole sets of eight levels of `b` bits (b = 2, 4 or
    /// 8): then every group starts on a byte and each eight levels fill `b` bytes, which the
    /// bytewise coders need.
    fn whole_byte_stride(&self, b: u32) -> Option<usize> {
        self.group
            .is_multiple_of(8)
            .then(|| 2 + self.group * b as usize / 8)
    }

    /// Encodes through a [`BitWriter`]: any width and group.
    fn encode_fields(&self, x: &[f32], out: &mut [u8]) {
        let l = self.levels();
        let mask = (1u64 << self.bits) - 1;
        let mut w = BitWriter::new(out);
        for g in x.chunks_exact(self.group) {
            let (code, d) = self.group_code(g);
            w.write(u64::from(code), 16);
            // A scale that rounded to zero (a group below f16's range) codes zeros, as an
            // engine's f16 scale would.
            w.write_fields(self.bits, g.len(), |k| {
                let q = if d > 0.0 {
                    (g[k] / d).round_ties_even().clamp(-l as f32, l as f32) as i32
                } else {
                    0
                };
                q as u64 & mask
            });
        }
    }

    /// [`IntCodec::encode_fields`] for `B` = 2, 4 or 8 bits when groups are whole sets of
    /// eight levels ([`IntCodec::whole_byte_stride`]): each eight values are divided,
    /// rounded and clamped in SIMD lanes and their levels written as `B` whole bytes. The
    /// same bytes (the same IEEE quotients and roundings); other groups take the bit writer.
    fn encode_bytewise<const B: u32>(&self, x: &[f32], out: &mut [u8]) {
        let Some(stride) = self.whole_byte_stride(B) else {
            return self.encode_fields(x, out);
        };
        let l = self.levels() as f32;
        for (g, o) in x.chunks_exact(self.group).zip(out.chunks_exact_mut(stride)) {
            let (code, d) = self.group_code(g);
            o[..2].copy_from_slice(&code.to_le_bytes());
            for (v, bytes) in g.chunks_exact(8).zip(o[2..].chunks_exact_mut(B as usize)) {
                // A scale that rounded to zero (a group below f16's range) codes zeros.
                let q = if d > 0.0 {
                    let v = f32x8::from(<[f32; 8]>::try_from(v).expect("eight values"));
                    let (lo, hi) = (f32x8::splat(-l), f32x8::splat(l));
                    round_ties_even_x8(v / f32x8::splat(d))
                        .fast_max(lo)
                        .fast_min(hi)
                        .trunc_int()
                } else {
                    i32x8::ZERO
                };
                bytes.copy_from_slice(&pack8::<B>(q)[..B as usize]);
            }
        }
    }

    /// Decodes field by field through a [`BitReader`]: any width and group.
    fn decode_fields(&self, bytes: &[u8], out: &mut [f32]) -> Result<(), &'static str> {
        let shift = 64 - self.bits;
        let mut r = BitReader::new(bytes);
        for g in out.chunks_exact_mut(self.group) {
            let d = group_scale(r.read(16).map_err(|_| "truncated")? as u16)?;
            // Every level first, then one check for the one never written.
            let mut lowest = false;
            r.read_fields(self.bits, g.len(), |k, raw| {
                // Sign-extend the b-bit two's complement value.
                let q = ((raw << shift) as i64) >> shift;
                lowest |= q == -(1 << (self.bits - 1));
                g[k] = saturate(q as f32 * d);
            })
            .map_err(|_| "truncated")?;
            if lowest {
                return Err(LOWEST);
            }
        }
        Ok(())
    }

    /// [`IntCodec::decode_fields`] for `B` = 2, 4 or 8 bits when groups are whole sets of
    /// eight levels (the usual case; [`IntCodec::whole_byte_stride`]): the eight are cut apart and scaled in SIMD lanes ([`levels8`])
    /// instead of one bit-reader step per level. Same values and errors; anything else (a
    /// short slice, other groups) takes the field reader.
    fn decode_bytewise<const B: u32>(
        &self,
        bytes: &[u8],
        out: &mut [f32],
    ) -> Result<(), &'static str> {
        let stride = match self.whole_byte_stride(B) {
            Some(stride) if bytes.len() >= out.len() / self.group * stride => stride,
            _ => return self.decode_fields(bytes, out),
        };
        for (g, group) in out
            .chunks_exact_mut(self.group)
            .zip(bytes.chunks_exact(stride))
        {
            let d = f32x8::splat(group_scale(u16::from_le_bytes([group[0], group[1]]))?);
            let mut lowest = false;
            for (o, raw) in g
                .chunks_exact_mut(8)
                .zip(group[2..].chunks_exact(B as usize))
            {
                let (q, low) = levels8::<B>(raw);
                lowest |= low;
                // saturate(), lane by lane: a level times a finite scale is never NaN, so
                // the plain max/min agree with clamp.
                let v = (q * d)
                    .fast_max(f32x8::splat(-f32::MAX))
                    .fast_min(f32x8::splat(f32::MAX));
                o.copy_from_slice(v.as_array());
            }
            if lowest {
                return Err(LOWEST);
            }
        }
        Ok(())
    }
}

/// The eight `B`-bit two's complement levels packed low bits first in `raw` (`B` bytes,
/// `B` = 2, 4 or 8) as floats in lanes, and whether one is the lowest level: each field is
/// moved to the top of its lane (bytes widened first; narrower fields by a left shift of
/// the lane's own count) and shifted back down with its sign.
fn levels8<const B: u32>(raw: &[u8]) -> (f32x8, bool) {
    let q = if B == 8 {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(raw);
        let widened = i32x8::from_i16x8(i16x8::from_u8x16_low(u8x16::from(bytes)));
        (widened << 24) >> 24
    } else {
        let mut word = [0u8; 4];
        word[..B as usize].copy_from_slice(raw);
        let up = i32x8::from(std::array::from_fn(|k| 1i32 << (32 - B - B * k as u32)));
        (i32x8::splat(i32::from_le_bytes(word)) * up) >> (32 - B)
    };
    (
        q.round_float(),
        q.simd_eq(i32x8::splat(i32::MIN >> (32 - B))).any(),
    )
}

/// Eight levels as `B`-bit two's complement fields packed low bits first (the inverse of
/// [`levels8`]): `B` bytes of the result.
fn pack8<const B: u32>(q: i32x8) -> [u8; 8] {
    let q = q.to_array();
    let mut packed = 0u64;
    for (k, &level) in q.iter().enumerate() {
        packed |= (u64::from(level as u32) & ((1 << B) - 1)) << (B * k as u32);
    }
    packed.to_le_bytes()
}

/// The error of a level no encoder writes.
const LOWEST: &str = "integer level −2^(b−1) is never written";

/// A group's scale from its f16x code.
fn group_scale(code: u16) -> Result<f32, &'static str> {
    let d = f16x::decode(code).ok_or("scale escape out of range")?;
    if d.is_sign_negative() {
        return Err("scale is negative");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bits, group, head_dim) of the bytewise tests: every width the bytewise coders take,
    /// whole vectors and groups of whole bytes, and groups of odd bytes or of fewer than
    /// eight levels (which take the bit reader and writer).
    const SETTINGS: [(u32, u32, usize); 8] = [
        (8, 0, 128),
        (8, 32, 64),
        (4, 0, 128),
        (4, 16, 64),
        (4, 3, 12),
        (2, 0, 64),
        (2, 8, 64),
        (2, 2, 8),
    ];

    /// A xorshift generator of 64-bit words.
    fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    /// The bytewise encoders write the bit writer's bytes, for every width they take and
    /// groups of odd and whole bytes: random values at many magnitudes (zero, subnormal and
    /// escaped scales included) and halfway quotients (ties round to even).
    #[test]
    fn bytewise_encode_is_the_bit_writers() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for (bits, group, d) in SETTINGS {
            let codec = IntCodec::new(CodecSpec::Int { bits, group }, d).expect("valid spec");
            let l = codec.levels() as f32;
            let len = (codec.bits_per_vector() as usize).div_ceil(8);
            for case in 0..3000 {
                let x: Vec<f32> = match case % 3 {
                    // Uniform in ±1 at a magnitude from 2^-140 to 2^120.
                    0 | 1 => {
                        let m = 2f32.powi((next() % 261) as i32 - 140);
                        (0..d)
                            .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * m)
                            .collect()
                    }
                    // Halves in ±l with l itself in every group: the scale is exactly 1, so
                    // quotients fall on ties.
                    _ => (0..d)
                        .map(|i| {
                            if i % codec.group == 0 {
                                l
                            } else {
                                ((next() % (4 * l as u64 + 1)) as f32 - 2.0 * l) / 2.0
                            }
                        })
                        .collect(),
                };
                let (mut fast, mut slow) = (vec![0xa5u8; len], vec![0x5au8; len]);
                codec.encode_vector(&x, &mut fast, &mut []);
                codec.encode_fields(&x, &mut slow);
                assert_eq!(fast, slow, "int{bits} g{group} d{d} case {case}");
            }
        }
    }

    /// The bytewise decoders return what the field reader returns, values bit for bit and
    /// errors alike, on random bytes (corrupt scales and lowest levels included), for
    /// every width they take and groups of odd and whole bytes.
    #[test]
    fn bytewise_decode_is_the_field_readers() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for (bits, group, d) in SETTINGS {
            let codec = IntCodec::new(CodecSpec::Int { bits, group }, d).expect("valid spec");
            let len = (codec.bits_per_vector() as usize).div_ceil(8);
            for case in 0..2000 {
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Mostly ordinary scales (random codes are often escapes or negative), and
                // a few slices cut short.
                if case % 4 != 0 {
                    for g in 0..d / codec.group {
                        let at = g * (16 + codec.group * bits as usize) / 8;
                        if (16 + codec.group * bits as usize).is_multiple_of(8) || g == 0 {
                            bytes[at + 1] &= 0x3f;
                        }
                    }
                }
                if case % 97 == 0 {
                    bytes.truncate(len - 1 - case % 3);
                }
                let (mut a, mut b) = (vec![1f32; d], vec![2f32; d]);
                let fast = codec.decode_vector(&bytes, &mut a, &mut []);
                let slow = codec.decode_fields(&bytes, &mut b);
                assert_eq!(fast, slow, "int{bits} g{group} d{d} case {case}");
                if fast.is_ok() {
                    let bits_of = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits_of(&a),
                        bits_of(&b),
                        "int{bits} g{group} d{d} case {case}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 2000, "too few decodable cases: {checked}");
    }
}
