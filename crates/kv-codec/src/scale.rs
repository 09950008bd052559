//! Unsigned floating-point formats for per-vector scales: an f32 without its sign bit, its
//! mantissa rounded (to nearest, ties to even) to `m` bits, stored in `8 + m` bits.
//!
//! Keeping f32's full 8-bit exponent means any finite scale, from subnormals up to
//! `f32::MAX`, has a finite code: unlike the published f16 norm, nothing overflows. The
//! mantissa can be short because encoders quantise with the *rounded* scale: a coarse scale
//! only shifts the codebook's fit a little (3 mantissa bits cost < 0.01 dB for the E8 Voronoi
//! codec), while each bit costs the same at every rate.

/// Width in bits of the format with `m` mantissa bits.
pub const fn bits(m: u32) -> u32 {
    8 + m
}

/// The code of `v ≥ 0` with `m ≤ 23` mantissa bits: rounded to nearest (ties to even),
/// saturating at the largest finite value. Negative inputs and NaN are programmer errors
/// (debug-asserted) and give code 0.
pub fn encode(v: f32, m: u32) -> u32 {
    debug_assert!(v >= 0.0 && m <= 23, "scale {v} with {m} mantissa bits");
    if v.is_nan() || v <= 0.0 {
        return 0;
    }
    let b = v.to_bits();
    let drop = 23 - m;
    let rounded = if drop == 0 {
        b
    } else {
        let half = 1u32 << (drop - 1);
        let rest = b & ((1 << drop) - 1);
        let up = rest > half || (rest == half && (b >> drop) & 1 == 1);
        (b >> drop << drop) + if up { 1 << drop } else { 0 }
    };
    // Rounding up may carry into the exponent, up to the infinity pattern: saturate at the
    // largest finite code.
    (rounded >> drop).min((0x7f80_0000u32 >> drop) - 1)
}

/// The scale a code stands for, or `None` for codes no encoder writes (infinity or NaN
/// patterns, or bits above the format's width).
pub fn decode(code: u32, m: u32) -> Option<f32> {
    if code >> bits(m) != 0 {
        return None;
    }
    let v = f32::from_bits(code << (23 - m));
    v.is_finite().then_some(v)
}

/// The 16-bit scale format used by the baseline codecs: this format with 7 mantissa
/// bits (bf16 without its sign bit).
pub mod scale16 {
    /// Code of the f32 `v ≥ 0` (rounded to nearest even; saturates below infinity).
    pub fn encode(v: f32) -> u16 {
        super::encode(v, 7) as u16
    }

    /// The scale a code stands for, or `None` for the (never written) NaN/infinity codes.
    pub fn decode(code: u16) -> Option<f32> {
        super::decode(u32::from(code), 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_round_to_nearest() {
        for m in [3, 7, 23] {
            assert_eq!(decode(encode(0.0, m), m), Some(0.0));
            assert_eq!(decode(encode(1.0, m), m), Some(1.0));
            assert_eq!(
                decode(encode(f32::MAX, m), m).map(f32::is_finite),
                Some(true)
            );
            assert!(decode(encode(f32::MIN_POSITIVE / 8.0, m), m).unwrap() > 0.0);
            for code in 0..(1u32 << bits(m)).min(1 << 16) {
                if let Some(v) = decode(code, m) {
                    assert_eq!(encode(v, m), code);
                }
            }
        }
        // 1 + 1/16 is halfway between 1 and 1.125 at m = 3: ties to even gives 1.
        assert_eq!(decode(encode(1.0625, 3), 3), Some(1.0));
        assert_eq!(decode(encode(1.1875, 3), 3), Some(1.25));
        assert_eq!(decode(encode(1.07, 3), 3), Some(1.125));
        // Infinity pattern and out-of-width codes are rejected.
        assert_eq!(decode(0xff << 3, 3), None);
        assert_eq!(decode(1 << 11, 3), None);
    }
}
