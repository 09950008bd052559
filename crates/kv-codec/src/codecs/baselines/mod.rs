//! Honest baselines: the formats engines and papers actually use, in the same harness and
//! with the same exact bit accounting as the lattice codecs, so comparisons are like with
//! like.
//!
//! | spec | module | what it is |
//! |---|---|---|
//! | `bf16` | [`float`] | passthrough, 16 bits per value (the uncompressed reference) |
//! | `fp8-e4m3`, `fp8-e4m3-g64` | [`float`] | OCP FP8 E4M3FN with one 16-bit scale per vector or per group (vLLM's FP8 KV cache) |
//! | `int8`, `int4`, `int4-g32`, … | [`int`] | symmetric absmax integers per token (or group), f16 scale, no rotation |
//! | `q8_0`, `q4_0` | [`llama_cpp`] | llama.cpp's 32-value blocks, after a random-sign Hadamard rotation |
//! | `turboquant-b<b>` | [`turboquant`] | TurboQuant-MSE (Zandieh et al. 2025): rotation + Gaussian Lloyd–Max levels + norm |
//! | `strawman-b<b>` | [`strawman`] | the uniform quantiser the published KakeyaLattice repository calls "TurboQuant" |
//!
//! Every baseline writes real packed bits (least significant bit first, as everywhere in
//! the format; see [`crate::bits`]) whose count is exactly its `bits_per_vector`.
//! Decoders return an error for any field no encoder writes and never produce a
//! non-finite value: a product that would overflow saturates at ±`f32::MAX`.
//!
//! Codecs that rotate or take norms first scale the vector by a power of two, so that no
//! sum of squares or Hadamard butterfly can overflow or underflow; power-of-two scaling
//! commutes exactly with IEEE arithmetic away from the overflow and subnormal ranges, so
//! for ordinary data the bits are the same as without it.

pub mod float;
pub mod int;
pub mod llama_cpp;
pub mod lloyd_max;
pub mod strawman;
pub mod turboquant;

use crate::error::Error;

/// Checks a head_dim for a codec with no rotation, whose values go in groups of `group`
/// (0 for the whole vector).
pub(crate) fn check_grouped_head_dim(head_dim: usize, group: u32) -> Result<usize, Error> {
    let group = if group == 0 { head_dim } else { group as usize };
    if head_dim == 0 || head_dim > hadamard::MAX_LEN || !head_dim.is_multiple_of(group) {
        return Err(Error::UnsupportedHeadDim { head_dim });
    }
    Ok(group)
}

/// Rounds `v >> shift` to nearest, ties to even (`shift` ≤ 63).
pub(crate) fn rne_shift(v: u64, shift: u32) -> u64 {
    if shift == 0 {
        return v;
    }
    let q = v >> shift;
    let rem = v & ((1u64 << shift) - 1);
    let half = 1u64 << (shift - 1);
    if rem > half || (rem == half && q & 1 == 1) {
        q + 1
    } else {
        q
    }
}

/// `⌊log2 m⌋` of a positive finite `m` (subnormals included).
pub(crate) fn exponent_of(m: f32) -> i32 {
    debug_assert!(m > 0.0 && m.is_finite());
    let bits = m.to_bits();
    let field = (bits >> 23) as i32;
    if field == 0 {
        // Subnormal: m = mantissa · 2^-149.
        (31 - (bits & 0x7f_ffff).leading_zeros() as i32) - 149
    } else {
        field - 127
    }
}

/// `v · 2^k`, in steps of representable powers of two (so `k` may be anything); rounds once
/// unless the result is subnormal.
pub(crate) fn ldexp(mut v: f32, mut k: i32) -> f32 {
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    while k > 127 {
        v *= pow2(127);
        k -= 127;
    }
    while k < -126 {
        v *= pow2(-126);
        k += 126;
    }
    v * pow2(k)
}

/// `v` saturated to the finite range (an overflowed product becomes ±`f32::MAX`).
pub(crate) fn saturate(v: f32) -> f32 {
    v.clamp(-f32::MAX, f32::MAX)
}

/// Multiplies every value by `n`, saturating (see [`saturate`]).
pub(crate) fn scale_saturating(out: &mut [f32], n: f32) {
    for o in out.iter_mut() {
        *o = saturate(*o * n);
    }
}

/// Largest magnitude of a slice (0 for an empty or all-zero slice).
pub(crate) fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// The signed 16-bit scale format of the integer and llama.cpp baselines: IEEE f16 (what
/// engines store), extended so that huge inputs stay finite.
///
/// * A value whose f16 rounding (to nearest even) is finite is stored as that f16,
///   subnormals and zero included: exactly what engines write.
/// * The f16 infinity and NaN patterns (exponent field 31), which no engine stores as a
///   scale, carry larger magnitudes: `sign · (1 + m/8) · 2^(16 + k)`, with `m` the low 3
///   bits and `k` the next 7 bits (`0 ≤ k ≤ 111`, so up to `1.875 · 2^127`). Magnitudes
///   past that saturate. Codes with `k > 111` are never written and do not decode.
pub mod f16x {
    use half::f16;

    use super::rne_shift;

    /// Largest escape payload (`k = 111`, `m = 7`).
    const MAX_ESCAPE: u32 = (111 << 3) | 7;

    /// Code of a finite `v` (rounded to nearest even; saturates beyond `1.875 · 2^127`).
    pub fn encode(v: f32) -> u16 {
        let h = f16::from_f32(v);
        if h.is_finite() {
            return h.to_bits();
        }
        let sign = if v.is_sign_negative() { 0x8000u16 } else { 0 };
        let bits = v.abs().to_bits();
        // |v| ≥ 65520 here, so v is a normal f32 with exponent ≥ 15; a mantissa that rounds
        // up carries into the exponent, which the addition does by itself.
        let exp = (bits >> 23) as i32 - 127;
        let rounded = rne_shift(u64::from(bits & 0x7f_ffff), 20) as i32;
        let payload = (((exp - 16) << 3) + rounded).clamp(0, MAX_ESCAPE as i32) as u16;
        sign | 0x7c00 | payload
    }

    /// The value of a code, or `None` for an escape code no encoder writes.
    pub fn decode(code: u16) -> Option<f32> {
        if code & 0x7c00 != 0x7c00 {
            return Some(f16::from_bits(code).to_f32());
        }
        let payload = u32::from(code & 0x3ff);
        if payload > MAX_ESCAPE {
            return None;
        }
        let k = (payload >> 3) as i32;
        let m = (payload & 7) as f32;
        let magnitude = super::ldexp(1.0 + m / 8.0, 16 + k);
        Some(if code & 0x8000 != 0 {
            -magnitude
        } else {
            magnitude
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rne_shift_rounds_ties_to_even() {
        assert_eq!(rne_shift(0b1010, 2), 0b10); // 2.5 → 2
        assert_eq!(rne_shift(0b1110, 2), 0b100); // 3.5 → 4
        assert_eq!(rne_shift(0b1011, 2), 0b11); // 2.75 → 3
        assert_eq!(rne_shift(0b1001, 2), 0b10); // 2.25 → 2
        assert_eq!(rne_shift(7, 0), 7);
    }

    #[test]
    fn exponents_and_ldexp() {
        assert_eq!(exponent_of(1.0), 0);
        assert_eq!(exponent_of(1.99), 0);
        assert_eq!(exponent_of(0.5), -1);
        assert_eq!(exponent_of(f32::MAX), 127);
        assert_eq!(exponent_of(f32::from_bits(1)), -149);
        assert_eq!(exponent_of(f32::MIN_POSITIVE), -126);
        assert_eq!(ldexp(1.0, 200), f32::INFINITY);
        assert_eq!(ldexp(ldexp(3e-30, 140), -140), 3e-30);
        assert_eq!(ldexp(ldexp(3.0, -140), 140), 3.0);
        assert_eq!(ldexp(1.0, -149), f32::from_bits(1));
    }

    #[test]
    fn f16x_is_f16_in_range_and_finite_beyond() {
        for v in [0.0f32, -0.0, 1.0, -2.5, 65504.0, 1e-7, -1e-3] {
            let code = f16x::encode(v);
            assert_eq!(code, half::f16::from_f32(v).to_bits());
            assert_eq!(f16x::decode(code), Some(half::f16::from_f32(v).to_f32()));
        }
        assert_eq!(f16x::decode(f16x::encode(65520.0)), Some(65536.0));
        // -1e6 = -1.907… · 2^19: k = 3, m = round(7.26) = 7.
        assert_eq!(f16x::decode(f16x::encode(-1e6)), Some(-983_040.0));
        let top = f16x::decode(f16x::encode(f32::MAX)).unwrap();
        assert_eq!(top, 1.875 * 2f32.powi(127));
        for v in [1e5f32, 3.3e20, 7.7e37, -2e30] {
            let back = f16x::decode(f16x::encode(v)).unwrap();
            assert!((back / v - 1.0).abs() <= 1.0 / 16.0 + 1e-6, "{v} → {back}");
        }
        // Every code decodes to a finite value or is refused.
        for code in 0..=u16::MAX {
            if let Some(v) = f16x::decode(code) {
                assert!(v.is_finite(), "{code:#06x}");
            }
        }
    }
}
